"""Benchmark of sliding-window prediction: seconds and peak memory per volume, vs volume size.

Builds a stream of the full-width FCN (Valindria et al. 2018; untrained weights, the cost does not
depend on them), compiles its forward pass once (``tf.function``, batch norm in inference mode,
a fixed window batch so that it is traced once) and segments synthetic volumes with
:func:`dltk_mm.inference.sliding_window.sliding_window_inference` (64^3 windows, batches of
windows, probabilities averaged on the host). Each volume size runs in a fresh subprocess so that
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
flags.DEFINE_list("sizes", ["64x128x128", "128x128x128", "128x256x256"],
                  "Volume sizes z x y x x (voxels), measured in this order.")
flags.DEFINE_float("overlap", 0.0, "Window overlap (0 = the authors' test time; 0.5 validation).")
flags.DEFINE_float("width", 1.0, "Network width (1 = the paper's).")
flags.DEFINE_integer("patch", 64, "Window size (cubic).")
flags.DEFINE_integer("batch_size", 4, "Windows per forward pass.")
flags.DEFINE_float("ceiling", None, "Matmul ceiling in GFLOP/s (default: measure it, 7 calls).")
flags.DEFINE_float("ceiling_per_cpu_s", None, "Matmul ceiling in GFLOP per CPU-second (default: "
                   "measured with --ceiling).")
flags.DEFINE_string("single", None, "Internal: measure this one size in this process.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure_one(size: tuple[int, int, int]) -> dict:
    """Segments one synthetic volume of ``size``; returns the figures."""
    import tensorflow as tf

    from dltk_mm.inference.sliding_window import count_windows, sliding_window_inference
    from dltk_mm.networks import build_multistream
    from experiments.bench.flops import forward_flops_per_sample

    model = build_multistream("individual", modalities=("ct",), width=FLAGS.width)
    stream = model.streams["ct"]

    @tf.function(reduce_retracing=True)
    def predict(windows: tf.Tensor) -> tf.Tensor:
        return stream(windows, training=False)["probabilities"]

    patch = (FLAGS.patch,) * 3
    predict(tf.zeros((FLAGS.batch_size, *patch, 1)))  # trace once
    rss_before = _peak_rss_mb()
    volume = np.random.default_rng(0).normal(size=size).astype(np.float32)
    windows = int(count_windows(size, patch, FLAGS.overlap))
    load = os.getloadavg()[0]
    cpu_start = time.process_time()
    start = time.perf_counter()
    probabilities = sliding_window_inference(volume, predict, patch_size=patch,
                                             overlap=FLAGS.overlap, batch_size=FLAGS.batch_size,
                                             num_classes=model.num_classes)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    assert probabilities.shape == (*size, model.num_classes)
    padded_windows = -(-windows // FLAGS.batch_size) * FLAGS.batch_size
    flops = forward_flops_per_sample(model.build_config, patch) * padded_windows
    return {
        "size": "x".join(map(str, size)), "voxels": int(np.prod(size)), "windows": windows,
        "overlap": FLAGS.overlap, "width": FLAGS.width, "seconds": round(elapsed, 2),
        "mvoxels_per_s": round(np.prod(size) / elapsed / 1e6, 3),
        "s_per_window": round(elapsed / windows, 3), "gflops": round(flops / elapsed / 1e9, 1),
        "gflop_per_cpu_s": round(flops / cpu / 1e9, 1), "cpu_utilisation": round(cpu / elapsed, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 0), "rss_after_warmup_mb": round(rss_before, 0),
        "load_average": round((load + os.getloadavg()[0]) / 2, 2),
    }


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
    app.run(main)
