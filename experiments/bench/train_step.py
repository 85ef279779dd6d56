"""Benchmark of the routed training step: patches/s and achieved GFLOP/s vs the matmul ceiling.

For each configuration (width, patch size, batch, XLA, mixed precision) a v4 multi-stream network
(the paper's best scheme; the other schemes run the same convolutions per step) is compiled with
the paper's optimizer and loss, one batch per modality is placed on the device once (no input
pipeline, no host round trip: the pipeline has its own benchmark, experiments/bench/pipeline.py),
one warm-up step per modality traces/compiles the step, then ``--steps`` steps alternate MR and CT
batches. Reported: seconds per step, patches/s, achieved GFLOP/s from the analytic FLOP count
(experiments/bench/flops.py: 2 FLOPs per conv MAC, training = 3x forward) and the ratio to this
machine's float32 matmul ceiling, measured by the same process. The 1-minute load average is
printed with every figure (other processes share the CPU).

Usage:
    python -m experiments.bench.train_step [--steps 3] [--runs full:1.0:64:2:0:0,...] [--json F]
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from dltk_mm.networks import build_multistream, make_optimizer  # noqa: E402
from dltk_mm.runtime import onednn_enabled  # noqa: E402
from experiments.bench.flops import (  # noqa: E402
    matmul_ceiling,
    train_flops_per_sample,
)
from experiments.bench.report import markdown_table  # noqa: E402

FLAGS = flags.FLAGS
def define_flags() -> None:
    """Defines the script's flags (only when it runs as a script, so that other scripts
    can import its functions beside their own flags of the same names)."""
    flags.DEFINE_integer("steps", 3,
                         "Timed steps per configuration (after one warm-up per modality).")
    flags.DEFINE_list(
        "runs",
        ["full:1.0:64:2:0:0", "full:1.0:64:2:1:0", "quarter:0.25:64:4:0:0", "quarter:0.25:64:4:1:0",
         "quarter:0.25:32:4:0:0", "quarter:0.25:48:4:0:0", "quarter:0.25:64:4:0:1"],
        "Configurations name:width:patch:batch:xla(0/1):mixed_precision(0/1).",
    )
    flags.DEFINE_integer("ceiling_calls", 7, "Timed calls of the matmul-ceiling measurement (each "
                         "configuration measures it right before its own timed steps).")
    flags.DEFINE_string("scheme", "v4", "Training scheme.")
    flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
    flags.DEFINE_integer("timeout", 300, "Seconds allowed per configuration (each runs in its own "
                         "process; XLA compilation of the full-width step on a CPU can exceed it).")
    flags.DEFINE_string("single", None, "Internal: measure this one configuration in this process.")


def load_average() -> float:
    """The 1-minute load average (NaN where unavailable)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def measure(name: str, width: float, patch: int, batch: int, xla: bool, mixed: bool,
            steps: int, ceiling_calls: int, scheme: str, ceiling_size: int = 2048,
            float16_ceiling: bool = False, **network: Any) -> dict:
    """Times ``steps`` routed training steps of one configuration.

    The matmul ceiling (``ceiling_size`` square float32 matrices) is measured in the same process
    right after the warm-up, so that the ratio compares two rates taken under the same
    conditions; with ``mixed`` and ``float16_ceiling`` (for GPUs: a CPU emulates float16 matmuls
    slowly) the float16 ceiling is measured and reported beside it. ``network`` holds further
    arguments of :func:`dltk_mm.networks.build_multistream` (e.g. ``modalities``,
    ``num_res_units``: the GPU script's CPU mode builds a smaller graph to trace).
    """
    keras.utils.set_random_seed(0)
    model = build_multistream(scheme, width=width,
                              dtype_policy="mixed_float16" if mixed else None, **network)
    model.compile(optimizer=make_optimizer(scheme, loss_scale=mixed), jit_compile=xla)
    step = tf.function(model.train_step, jit_compile=xla, reduce_retracing=True)
    rng = np.random.default_rng(0)
    batches = []
    for index in range(len(model.modalities)):
        image = tf.constant(rng.normal(size=(batch, patch, patch, patch, 1)).astype(np.float32))
        label = tf.constant(rng.integers(0, 5, size=(batch, patch, patch, patch), dtype=np.int32))
        batches.append((image, label, tf.fill([batch], index)))
    start = time.perf_counter()
    for data in batches:  # trace/compile, one step per modality
        float(step(data)["loss"])
    warmup = time.perf_counter() - start
    ceiling = matmul_ceiling(size=ceiling_size, calls=ceiling_calls)
    half = (matmul_ceiling(size=ceiling_size, calls=ceiling_calls, dtype="float16")
            if mixed and float16_ceiling else None)
    load_before = load_average()
    cpu_start = time.process_time()
    start = time.perf_counter()
    for i in range(steps):
        logs = step(batches[i % len(batches)])
    float(logs["loss"])  # one device->host read at the end
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    per_sample = train_flops_per_sample(model.build_config, (patch,) * 3)
    patches_per_s = steps * batch / elapsed
    gflops = per_sample * patches_per_s / 1e9
    return {
        "name": name, "width": width, "patch": patch, "batch": batch, "xla": xla,
        "mixed_precision": mixed, "steps": steps, "warmup_s": round(warmup, 1),
        "s_per_step": round(elapsed / steps, 3), "patches_per_s": round(patches_per_s, 3),
        "gflop_per_patch": round(per_sample / 1e9, 4), "gflops": round(gflops, 1),
        "ratio_to_ceiling": round(gflops / ceiling.gflops, 3),
        "gflop_per_cpu_s": round(per_sample * steps * batch / cpu / 1e9, 1),
        "cpu_ratio_to_ceiling": round(per_sample * steps * batch / cpu / 1e9
                                      / ceiling.gflops_per_cpu_second, 3),
        "cpu_utilisation": round(cpu / elapsed, 2),
        "ceiling_gflops": round(ceiling.gflops, 1),
        "ceiling_gflops_range": [round(ceiling.gflops_min, 1), round(ceiling.gflops_max, 1)],
        "ceiling_gflop_per_cpu_s": round(ceiling.gflops_per_cpu_second, 1),
        "load_average": round((load_before + load_average()) / 2, 2),
    } | ({"float16_ceiling_gflops": round(half.gflops, 1),
          "ratio_to_float16_ceiling": round(gflops / half.gflops, 3)} if half else {})


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.single:
        name, width, patch, batch, xla, mixed = FLAGS.single.split(":")
        result = measure(name, float(width), int(patch), int(batch), xla == "1", mixed == "1",
                         FLAGS.steps, FLAGS.ceiling_calls, FLAGS.scheme)
        print("RESULT " + json.dumps(result), flush=True)
        return
    devices = tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("CPU")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"TensorFlow {tf.__version__}, devices {[d.name for d in devices]}, oneDNN CPU kernels "
          f"{'on' if onednn_enabled() else 'off'}", flush=True)
    load = load_average()
    ceiling = matmul_ceiling(calls=FLAGS.ceiling_calls)
    print(f"float32 matmul ceiling: {ceiling.gflops:.1f} GFLOP/s wall (calls "
          f"{ceiling.gflops_min:.0f}-{ceiling.gflops_max:.0f}), "
          f"{ceiling.gflops_per_cpu_second:.1f} GFLOP per CPU-second, CPU utilisation "
          f"{ceiling.cpu_utilisation:.2f} (load average {load:.2f}); each configuration "
          "measures it again before its steps", flush=True)
    results = []
    for spec in FLAGS.runs:
        command = [sys.executable, "-m", "experiments.bench.train_step", f"--single={spec}",
                   f"--steps={FLAGS.steps}", f"--scheme={FLAGS.scheme}",
                   f"--ceiling_calls={FLAGS.ceiling_calls}"]
        try:
            output = subprocess.run(command, capture_output=True, text=True, check=True,
                                    timeout=FLAGS.timeout).stdout
            result = json.loads(output.split("RESULT ", 1)[1])
        except subprocess.TimeoutExpired:
            name, width, patch, batch, xla, mixed = spec.split(":")
            result = {"name": name, "width": float(width), "patch": int(patch),
                      "batch": int(batch), "xla": xla == "1", "mixed_precision": mixed == "1",
                      "error": f"not finished within {FLAGS.timeout} s (compilation + "
                               f"{FLAGS.steps} steps)", "load_average": round(load_average(), 2)}
        results.append(result)
        print(json.dumps(result), flush=True)
    def row(r: dict) -> list[object]:
        config = [r["name"], r["width"], f"{r['patch']}^3", r["batch"],
                  "on" if r["xla"] else "off", "on" if r["mixed_precision"] else "off"]
        if "error" in r:
            return [*config, r["error"], *[""] * 7, r["load_average"]]
        return [*config, r["s_per_step"], r["patches_per_s"], r["gflops"], r["ceiling_gflops"],
                f"{r['ratio_to_ceiling']:.0%}", r["gflop_per_cpu_s"],
                f"{r['cpu_ratio_to_ceiling']:.0%}", r["cpu_utilisation"], r["load_average"]]

    print()
    print(markdown_table(
        ["config", "width", "patch", "batch", "XLA", "mixed", "s/step", "patches/s", "GFLOP/s",
         "ceiling GFLOP/s", "ratio (wall)", "GFLOP/CPU-s", "ratio (CPU)", "CPU util.", "load"],
        [row(r) for r in results]))
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump({"ceiling": dataclasses.asdict(ceiling), "results": results}, f, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
