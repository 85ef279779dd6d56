"""Benchmark of sliding-window prediction: seconds and peak memory per volume, vs volume size.

Builds a stream of the full-width FCN (Valindria et al. 2018; untrained weights, the cost does not
depend on them), wraps its forward pass in ``StreamProbabilities`` (one ``tf.function``, batch
norm in inference mode, traced once) and segments synthetic volumes with
:func:`dltk_mm.inference.segment.segment_volume`, the one segmentation path of dltk-mm-predict
(64^3 windows, batches of windows, probabilities blended on the host, argmax). Each volume size
runs in a fresh subprocess so that
its peak resident memory (``ru_maxrss``) is its own. Reported: seconds, windows, voxels per second,
achieved GFLOP/s from the analytic forward FLOP count of the windows (experiments/bench/flops.py)
and the ratio to the matmul ceiling, peak RSS, the 1-minute load average, and each size's time
against the first size's beside its voxels (cost linear in voxels: a 2x larger volume within
2.2x the time).

``--peer`` (in the benchmark environment with PyTorch and MONAI, experiments/bench/README.md,
"PyTorch and MONAI peers") also segments each volume with MONAI's ``sliding_window_inference``
running the same FCN in PyTorch (experiments/bench/torch_fcn.py: eval mode, no gradients,
``roi_size`` = the window, the same overlap, ``constant`` / ``gaussian`` mode for ``--weighting``
uniform / gaussian, ``sw_batch_size`` = ``--batch_size``), each framework in its own process so
that both peak RSS figures are the framework's own, and reports them side by side.

Usage:
    python -m experiments.bench.predict [--sizes 128x256x256,...] [--overlap 0.5] [--width 1]
    /work/benchvenv/bin/python -m experiments.bench.predict --peer --sizes 64x128x256,128x256x256
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments.bench.peer import speedup  # noqa: E402
from experiments.bench.report import markdown_table, run_result  # noqa: E402

FLAGS = flags.FLAGS
def define_flags() -> None:
    """Defines the script's flags (only when it runs as a script, so that other scripts
    can import its functions beside their own flags of the same names)."""
    flags.DEFINE_list("sizes", ["64x128x128", "128x128x128", "128x256x256"],
                      "Volume sizes z x y x x (voxels), measured in this order.")
    flags.DEFINE_float("overlap", 0.0,
                       "Window overlap (0 = the authors' test time; 0.5 validation).")
    flags.DEFINE_float("width", 1.0, "Network width (1 = the paper's).")
    flags.DEFINE_integer("patch", 64, "Window size (cubic).")
    flags.DEFINE_integer("batch_size", 4, "Windows per forward pass (MONAI's sw_batch_size).")
    flags.DEFINE_enum("weighting", "uniform", ["uniform", "gaussian"],
                      "Blending of overlapping windows (MONAI's mode constant / gaussian).")
    flags.DEFINE_boolean("peer", False, "Also segment each volume with MONAI's "
                         "sliding_window_inference and the same FCN in PyTorch (needs the "
                         "benchmark environment of experiments/bench/README.md).")
    flags.DEFINE_float("ceiling", None, "Matmul ceiling in GFLOP/s (default: measure it, 7 calls).")
    flags.DEFINE_float("ceiling_per_cpu_s", None,
                       "Matmul ceiling in GFLOP per CPU-second (default: measured with --ceiling).")
    flags.DEFINE_string("single", None, "Internal: measure this one size in this process.")
    flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def gpu_memory_peak_mb(reset: bool = False) -> float | None:
    """Peak memory TensorFlow allocated on the first GPU since the last reset, in MB (None on a
    machine without a GPU); ``reset=True`` starts a new measurement and returns None."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    if reset:
        tf.config.experimental.reset_memory_stats("GPU:0")
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def measure_volume(size: tuple[int, int, int], width: float = 1.0, patch: int = 64,
                   batch_size: int = 4, overlap: float = 0.0, weighting: str = "uniform") -> dict:
    """Segments one synthetic volume of ``size`` through the one segmentation path.

    An untrained stream of the given width (the cost does not depend on the weights) is wrapped
    in :class:`dltk_mm.inference.segment.StreamProbabilities` (traced once) and the volume is
    segmented by :func:`dltk_mm.inference.segment.segment_volume` (sliding window, blending,
    argmax), as ``dltk-mm-predict`` does after preprocessing.

    Returns:
        Seconds, windows, voxels/s, achieved GFLOP/s, peak RSS and, on a GPU, the peak GPU memory
        of the segmentation (``peak_gpu_mb``).
    """
    from dltk_mm.inference.segment import InferenceConfig, StreamProbabilities, segment_volume
    from dltk_mm.inference.sliding_window import count_windows
    from dltk_mm.networks import build_multistream
    from experiments.bench.flops import forward_flops_per_sample

    model = build_multistream("individual", modalities=("ct",), width=width)
    probabilities = StreamProbabilities(model)
    window = (patch,) * 3
    probabilities(np.zeros((batch_size, *window, 1), np.float32), "ct")  # trace once
    rss_before = _peak_rss_mb()
    volume = np.random.default_rng(0).normal(size=size).astype(np.float32)
    windows = int(count_windows(size, window, overlap))
    config = InferenceConfig(overlap=overlap, batch_size=batch_size, weighting=weighting)
    gpu_memory_peak_mb(reset=True)
    load = os.getloadavg()[0]
    cpu_start = time.process_time()
    start = time.perf_counter()
    segmentation = segment_volume(volume, lambda w: probabilities(w, "ct"), window, config,
                                  model.num_classes)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    assert segmentation.labels.shape == tuple(size)
    padded_windows = -(-windows // batch_size) * batch_size
    flops = forward_flops_per_sample(model.build_config, window) * padded_windows
    peak_gpu = gpu_memory_peak_mb()
    return {
        "size": "x".join(map(str, size)), "voxels": int(np.prod(size)), "windows": windows,
        "overlap": overlap, "weighting": weighting, "width": width, "batch_size": batch_size,
        "seconds": round(elapsed, 2),
        "mvoxels_per_s": round(np.prod(size) / elapsed / 1e6, 3),
        "s_per_window": round(elapsed / windows, 4), "gflops": round(flops / elapsed / 1e9, 1),
        "gflop_per_cpu_s": round(flops / cpu / 1e9, 1), "cpu_utilisation": round(cpu / elapsed, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 0), "rss_after_warmup_mb": round(rss_before, 0),
        "peak_gpu_mb": None if peak_gpu is None else round(peak_gpu, 0),
        "parameters": int(sum(np.prod(v.shape) for v in model.streams["ct"].trainable_weights)),
        "load_average": round((load + os.getloadavg()[0]) / 2, 2),
    }


def measure_one(size: tuple[int, int, int]) -> dict:
    """:func:`measure_volume` with the flags' settings."""
    return measure_volume(size, width=FLAGS.width, patch=FLAGS.patch,
                          batch_size=FLAGS.batch_size, overlap=FLAGS.overlap,
                          weighting=FLAGS.weighting)


def scaling(results: list[dict]) -> list[str]:
    """Each volume's time against the first volume's, beside its voxels and windows against the
    first's (``"x2.05 for x2.00 voxels, x2.00 windows"``; linear cost: the factors agree. With
    overlap the windows grow faster than the voxels on small volumes: the last window of an axis
    is placed flush with its end)."""
    first = next((r for r in results if "seconds" in r), None)
    cells = []
    for r in results:
        if first is None or "seconds" not in r:
            cells.append("-")
        else:
            cells.append(f"x{r['seconds'] / first['seconds']:.2f} for "
                         f"x{r['voxels'] / first['voxels']:.2f} voxels, "
                         f"x{r['windows'] / first['windows']:.2f} windows")
    return cells


def _monai_run(size: str) -> dict:
    """One volume with MONAI and the PyTorch FCN (experiments/bench/torch_fcn.py), in its own
    process."""
    from experiments.bench.flops import forward_flops_per_sample
    from experiments.bench.peer import fcn_layout, network_config, peer_command

    config = network_config(FLAGS.width)
    command = peer_command("predict", fcn_layout(config), size=size, patch=FLAGS.patch,
                           overlap=FLAGS.overlap, weighting=FLAGS.weighting,
                           batch=FLAGS.batch_size)
    result = run_result(command)
    result.pop("timed_out", None)
    if "seconds" in result:
        flops = forward_flops_per_sample(config, (FLAGS.patch,) * 3) * result["windows"]
        result["gflops"] = round(flops / result["seconds"] / 1e9, 1)
    return {"size": size} | result


def peer_table(results: list[dict], peers: list[dict]) -> str:
    """dltk_mm and MONAI side by side per volume: seconds, windows, peak RSS, scaling, ratio."""
    rows = []
    for ours, theirs, our_scale, their_scale in zip(results, peers, scaling(results),
                                                    scaling(peers), strict=True):
        if "seconds" in ours and "seconds" in theirs:
            verdict = speedup(ours["seconds"], theirs["seconds"]).replace("PyTorch", "MONAI")
        else:
            verdict = "error: " + (ours.get("error") or theirs.get("error"))
        rows.append((ours["size"], f"{ours.get('voxels', theirs.get('voxels', 0)):,}",
                     f"{ours.get('windows', '-')} / {theirs.get('windows', '-')}",
                     ours.get("seconds", "-"), theirs.get("seconds", "-"),
                     f"{ours.get('gflops', '-')} / {theirs.get('gflops', '-')}",
                     f"{ours.get('peak_rss_mb', 0):.0f} / {theirs.get('peak_rss_mb', 0):.0f}",
                     f"{ours.get('rss_after_warmup_mb', 0):.0f} / "
                     f"{theirs.get('rss_after_warmup_mb', 0):.0f}",
                     our_scale, their_scale, verdict))
    return markdown_table(
        ["volume (z x y x x)", "voxels", "windows (dltk_mm / MONAI)", "dltk_mm s", "MONAI s",
         "GFLOP/s (dltk_mm / MONAI)", "peak RSS MB (dltk_mm / MONAI)",
         "RSS after warm-up MB (dltk_mm / MONAI)", "dltk_mm time vs first size",
         "MONAI time vs first size", "result"], rows)


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.single:
        size = tuple(int(s) for s in FLAGS.single.split("x"))
        print("RESULT " + json.dumps(measure_one(size)), flush=True)
        return
    if FLAGS.peer:
        from experiments.bench.peer import missing_peer

        message = missing_peer(("torch", "monai"), "experiments.bench.predict")
        if message:
            sys.exit(message)
    ceiling = FLAGS.ceiling
    ceiling_cpu = FLAGS.ceiling_per_cpu_s
    if ceiling is None or ceiling_cpu is None:
        from experiments.bench.flops import matmul_ceiling

        measured = matmul_ceiling()
        ceiling, ceiling_cpu = measured.gflops, measured.gflops_per_cpu_second
        print(f"float32 matmul ceiling: {ceiling:.1f} GFLOP/s wall, "
              f"{measured.gflops_per_cpu_second:.1f} GFLOP per CPU-second", flush=True)
    from dltk_mm.runtime import onednn_enabled

    print(f"oneDNN CPU kernels {'on' if onednn_enabled() else 'off'}", flush=True)
    results, peers = [], []
    for size in FLAGS.sizes:
        command = [sys.executable, "-m", "experiments.bench.predict", f"--single={size}",
                   f"--overlap={FLAGS.overlap}", f"--width={FLAGS.width}",
                   f"--patch={FLAGS.patch}", f"--batch_size={FLAGS.batch_size}",
                   f"--weighting={FLAGS.weighting}"]
        result = run_result(command)
        result.pop("timed_out", None)
        result = {"size": size} | result
        if "gflops" in result:
            result["ratio_to_ceiling"] = round(result["gflops"] / ceiling, 3)
            result["cpu_ratio_to_ceiling"] = round(result["gflop_per_cpu_s"] / ceiling_cpu, 3)
        results.append(result)
        print(json.dumps(result), flush=True)
        if FLAGS.peer:
            peers.append(_monai_run(size))
            print("monai: " + json.dumps(peers[-1]), flush=True)

    def row(r: dict, scale: str) -> tuple:
        if "error" in r:
            return (r["size"], r["error"], *[""] * 11)
        return (r["size"], f"{r['voxels']:,}", r["windows"], r["seconds"], r["s_per_window"],
                r["mvoxels_per_s"], r["gflops"], f"{r['ratio_to_ceiling']:.0%}",
                r["gflop_per_cpu_s"], f"{r['cpu_ratio_to_ceiling']:.0%}",
                f"{r['peak_rss_mb']:.0f}", r["load_average"], scale)

    print()
    print(markdown_table(
        ["volume (z x y x x)", "voxels", "windows", "s", "s/window", "Mvoxel/s", "GFLOP/s",
         "ratio (wall)", "GFLOP/CPU-s", "ratio (CPU)", "peak RSS MB", "load",
         "time vs first size"],
        [row(r, scale) for r, scale in zip(results, scaling(results), strict=True)]))
    report = {"ceiling_gflops": ceiling, "ceiling_gflop_per_cpu_s": ceiling_cpu,
              "results": results}
    if FLAGS.peer:
        report["monai_results"] = peers
        print()
        print(f"dltk_mm beside MONAI's sliding_window_inference, the same FCN (width "
              f"{FLAGS.width}), {FLAGS.patch}^3 windows, overlap {FLAGS.overlap}, "
              f"{FLAGS.weighting} weighting, {FLAGS.batch_size} windows per call:")
        print(peer_table(results, peers))
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
