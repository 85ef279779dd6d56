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

``--peer`` (in the benchmark environment with PyTorch, experiments/bench/README.md, "PyTorch and
MONAI peers") also times the same FCN stream in PyTorch (experiments/bench/torch_fcn.py: the same
layers and widths, ``torch.channels_last_3d``, the same Adam settings and soft Dice loss, the
same batch and patch) for each float32 configuration without XLA; with ``--repeats N`` the runs
alternate dltk_mm / PyTorch, each in its own process, and each framework's median s/step and the
ratio are reported. torch is imported only by those child processes.

Usage:
    python -m experiments.bench.train_step [--steps 3] [--runs full:1.0:64:2:0:0,...] [--json F]
    /work/benchvenv/bin/python -m experiments.bench.train_step --peer --repeats 3 \
        --runs full:1.0:64:2:0:0,quarter:0.25:64:4:0:0
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments.bench.peer import speedup  # noqa: E402
from experiments.bench.report import markdown_table, run_result  # noqa: E402

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
    flags.DEFINE_boolean("peer", False, "Also time the same FCN, Adam and soft Dice loss in "
                         "PyTorch (experiments/bench/torch_fcn.py; needs the benchmark "
                         "environment of experiments/bench/README.md), alternating with dltk_mm.")
    flags.DEFINE_integer("repeats", 1, "Runs of each configuration (each in its own process; "
                         "with --peer alternating dltk_mm / PyTorch; medians reported).")


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
    import keras
    import tensorflow as tf

    from dltk_mm.networks import build_multistream, make_optimizer
    from experiments.bench.flops import matmul_ceiling, train_flops_per_sample

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
    stream = model.streams[model.modalities[0]]
    patches_per_s = steps * batch / elapsed
    gflops = per_sample * patches_per_s / 1e9
    return {
        "name": name, "width": width, "patch": patch, "batch": batch, "xla": xla,
        "mixed_precision": mixed, "steps": steps, "warmup_s": round(warmup, 1),
        "stream_parameters": int(sum(np.prod(v.shape) for v in stream.trainable_weights)),
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


def _spec_fields(spec: str) -> dict:
    name, width, patch, batch, xla, mixed = spec.split(":")
    return {"name": name, "width": float(width), "patch": int(patch), "batch": int(batch),
            "xla": xla == "1", "mixed_precision": mixed == "1"}


def _dltk_mm_run(spec: str) -> dict:
    """One configuration in its own process (``--single``), under ``--timeout``."""
    command = [sys.executable, "-m", "experiments.bench.train_step", f"--single={spec}",
               f"--steps={FLAGS.steps}", f"--scheme={FLAGS.scheme}",
               f"--ceiling_calls={FLAGS.ceiling_calls}"]
    result = run_result(command, timeout=FLAGS.timeout)
    if "error" in result:
        if result.pop("timed_out"):
            result["error"] += f" (compilation + {FLAGS.steps} steps)"
        result = _spec_fields(spec) | result | {"load_average": round(load_average(), 2)}
    return result


def _pytorch_run(spec: str) -> dict:
    """The same configuration's network and step in PyTorch (experiments/bench/torch_fcn.py),
    in its own process under ``--timeout``."""
    from experiments.bench.flops import train_flops_per_sample
    from experiments.bench.peer import adam_settings, fcn_layout, network_config, peer_command

    fields = _spec_fields(spec)
    config = network_config(fields["width"])
    command = peer_command("train", fcn_layout(config), patch=fields["patch"],
                           batch=fields["batch"], steps=FLAGS.steps, **adam_settings(FLAGS.scheme))
    result = fields | run_result(command, timeout=FLAGS.timeout)
    result.pop("timed_out", None)
    if "patches_per_s" in result:
        per_sample = train_flops_per_sample(config, (fields["patch"],) * 3)
        result["gflops"] = round(per_sample * result["patches_per_s"] / 1e9, 1)
    return result


def peer_rows(specs: list[str], dltk_mm: dict[str, list[dict]], pytorch: dict[str, list[dict]]
              ) -> tuple[list[dict], str]:
    """Per configuration: each framework's median s/step over its repetitions and the ratio.

    Returns:
        The summary records (the JSON's ``peer``) and their Markdown table.
    """
    def median(runs: list[dict], key: str) -> float | None:
        values = [r[key] for r in runs if key in r]
        return float(np.median(values)) if values else None

    def cell(runs: list[dict], key: str) -> str:
        values = [f"{r[key]:g}" if key in r else "error" for r in runs]
        return ", ".join(values) or "-"

    summary, rows = [], []
    for spec in specs:
        fields = _spec_fields(spec)
        ours, theirs = dltk_mm[spec], pytorch.get(spec, [])
        mine, peer = median(ours, "s_per_step"), median(theirs, "s_per_step")
        if not theirs:
            verdict = "no PyTorch run (XLA / mixed precision)"
        elif mine is None or peer is None:
            errors = [r["error"] for r in ours + theirs if "error" in r]
            verdict = "error: " + errors[0]
        else:
            verdict = speedup(mine, peer)
        record = fields | {"dltk_mm_s_per_step": mine, "pytorch_s_per_step": peer,
                           "dltk_mm_runs": [r.get("s_per_step") for r in ours],
                           "pytorch_runs": [r.get("s_per_step") for r in theirs],
                           "dltk_mm_parameters": next((r["stream_parameters"] for r in ours
                                                       if "stream_parameters" in r), None),
                           "pytorch_parameters": next((r["parameters"] for r in theirs
                                                       if "parameters" in r), None),
                           "dltk_mm_gflops": median(ours, "gflops"),
                           "pytorch_gflops": median(theirs, "gflops"),
                           "ratio_pytorch_to_dltk_mm": (round(peer / mine, 3)
                                                        if mine and peer else None),
                           "result": verdict}
        summary.append(record)
        rows.append([fields["name"], fields["width"], f"{fields['patch']}^3", fields["batch"],
                     "on" if fields["xla"] else "off", "on" if fields["mixed_precision"] else "off",
                     "-" if mine is None else f"{mine:.3f}", "-" if peer is None else f"{peer:.3f}",
                     cell(ours, "s_per_step"), cell(theirs, "s_per_step"),
                     f"{record['dltk_mm_parameters']} / {record['pytorch_parameters']}",
                     f"{record['dltk_mm_gflops']} / {record['pytorch_gflops']}", verdict])
    table = markdown_table(
        ["config", "width", "patch", "batch", "XLA", "mixed", "dltk_mm s/step (median)",
         "PyTorch s/step (median)", "dltk_mm runs", "PyTorch runs",
         "parameters (dltk_mm / PyTorch)", "GFLOP/s (dltk_mm / PyTorch)", "result"], rows)
    return summary, table


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.single:
        name, width, patch, batch, xla, mixed = FLAGS.single.split(":")
        result = measure(name, float(width), int(patch), int(batch), xla == "1", mixed == "1",
                         FLAGS.steps, FLAGS.ceiling_calls, FLAGS.scheme)
        print("RESULT " + json.dumps(result), flush=True)
        return
    if FLAGS.peer:
        from experiments.bench.peer import missing_peer

        message = missing_peer(("torch",), "experiments.bench.train_step")
        if message:
            sys.exit(message)
    import tensorflow as tf  # after the check: a missing peer fails at once

    from dltk_mm.runtime import onednn_enabled
    from experiments.bench.flops import matmul_ceiling

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
    dltk_mm_runs: dict[str, list[dict]] = {}
    pytorch_runs: dict[str, list[dict]] = {}
    for spec in FLAGS.runs:
        for repeat in range(FLAGS.repeats):  # alternating dltk_mm / PyTorch
            result = _dltk_mm_run(spec) | ({"repeat": repeat} if FLAGS.repeats > 1 else {})
            results.append(result)
            dltk_mm_runs.setdefault(spec, []).append(result)
            print(json.dumps(result), flush=True)
            fields = _spec_fields(spec)
            if FLAGS.peer and not fields["xla"] and not fields["mixed_precision"]:
                peer = _pytorch_run(spec) | {"repeat": repeat}
                pytorch_runs.setdefault(spec, []).append(peer)
                print("pytorch: " + json.dumps(peer), flush=True)

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
    report: dict = {"ceiling": dataclasses.asdict(ceiling), "results": results}
    if FLAGS.peer:
        summary, table = peer_rows(list(FLAGS.runs), dltk_mm_runs, pytorch_runs)
        report |= {"pytorch_results": [r for runs in pytorch_runs.values() for r in runs],
                   "peer": summary}
        print()
        print(f"dltk_mm (TensorFlow {tf.__version__}) beside PyTorch, the same FCN, Adam and "
              f"soft Dice loss; medians over {FLAGS.repeats} alternating run(s) of "
              f"{FLAGS.steps} steps each:")
        print(table)
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
