"""Benchmark of sliding-window prediction: seconds and peak memory per volume, vs volume size.

Builds a stream of the full-width FCN (Valindria et al. 2018; untrained weights, the cost does not
depend on them), wraps its forward pass in ``StreamProbabilities`` (one ``tf.function``, batch
norm in inference mode, traced once) and segments synthetic volumes with
:func:`dltk_mm.inference.segment.segment_volume`, the one segmentation path of dltk-mm-predict
(64^3 windows, batches of windows, probabilities blended on the host, argmax). Each volume size
runs in a fresh subprocess so that
its peak resident memory (``ru_maxrss``) is its own. Reported: seconds, windows, voxels per second,
achieved GFLOP/s from the analytic forward FLOP count of the windows (experiments/bench/flops.py)
and the ratio to the matmul ceiling, peak RSS, and the 1-minute load average.

Usage:
    python -m experiments.bench.predict [--sizes 128x256x256,...] [--overlap 0.5] [--width 1]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments.bench.report import markdown_table  # noqa: E402

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
    flags.DEFINE_integer("batch_size", 4, "Windows per forward pass.")
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
                   batch_size: int = 4, overlap: float = 0.0) -> dict:
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
    config = InferenceConfig(overlap=overlap, batch_size=batch_size)
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
        "overlap": overlap, "width": width, "batch_size": batch_size, "seconds": round(elapsed, 2),
        "mvoxels_per_s": round(np.prod(size) / elapsed / 1e6, 3),
        "s_per_window": round(elapsed / windows, 4), "gflops": round(flops / elapsed / 1e9, 1),
        "gflop_per_cpu_s": round(flops / cpu / 1e9, 1), "cpu_utilisation": round(cpu / elapsed, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 0), "rss_after_warmup_mb": round(rss_before, 0),
        "peak_gpu_mb": None if peak_gpu is None else round(peak_gpu, 0),
        "load_average": round((load + os.getloadavg()[0]) / 2, 2),
    }


def measure_one(size: tuple[int, int, int]) -> dict:
    """:func:`measure_volume` with the flags' settings."""
    return measure_volume(size, width=FLAGS.width, patch=FLAGS.patch,
                          batch_size=FLAGS.batch_size, overlap=FLAGS.overlap)


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.single:
        size = tuple(int(s) for s in FLAGS.single.split("x"))
        print("RESULT " + json.dumps(measure_one(size)), flush=True)
        return
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
    results = []
    for size in FLAGS.sizes:
        command = [sys.executable, "-m", "experiments.bench.predict", f"--single={size}",
                   f"--ceiling_per_cpu_s={ceiling_cpu}",
                   f"--overlap={FLAGS.overlap}", f"--width={FLAGS.width}",
                   f"--patch={FLAGS.patch}", f"--batch_size={FLAGS.batch_size}",
                   f"--ceiling={ceiling}"]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        result = json.loads(output.split("RESULT ", 1)[1])
        result["ratio_to_ceiling"] = round(result["gflops"] / ceiling, 3)
        if "gflop_per_cpu_s" in result:
            result["cpu_ratio_to_ceiling"] = round(result["gflop_per_cpu_s"] / ceiling_cpu, 3)
        results.append(result)
        print(json.dumps(result), flush=True)
    print()
    print(markdown_table(
        ["volume (z x y x x)", "voxels", "windows", "s", "s/window", "Mvoxel/s", "GFLOP/s",
         "ratio (wall)", "GFLOP/CPU-s", "ratio (CPU)", "peak RSS MB", "load"],
        [(r["size"], f"{r['voxels']:,}", r["windows"], r["seconds"], r["s_per_window"],
          r["mvoxels_per_s"], r["gflops"], f"{r['ratio_to_ceiling']:.0%}",
          r.get("gflop_per_cpu_s", ""), f"{r.get('cpu_ratio_to_ceiling', 0):.0%}",
          f"{r['peak_rss_mb']:.0f}", r["load_average"]) for r in results]))
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump({"ceiling_gflops": ceiling, "ceiling_gflop_per_cpu_s": ceiling_cpu,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
