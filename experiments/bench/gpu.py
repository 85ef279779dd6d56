"""The GPU benchmark: training step, input pipeline and whole-volume prediction in one run.

On a machine with a GPU (``--mode=auto`` picks it) it measures, in one process and in under
8 minutes on a current data-centre GPU:

* the GPU's model and its matmul ceiling (float32, which TensorFlow runs as TF32 on tensor cores
  where the GPU has them, and float16), measured by this script (experiments/bench/flops.py);
* the routed training step at the paper's configuration (v4, full width, batch 16 of 64^3
  patches) in float32, with XLA, with mixed precision and with both
  (experiments/bench/train_step.py: ``measure``): s/step, patches/s, GFLOP/s and the ratio to
  the ceiling of its precision;
* the training input pipeline's patches/s at the same batch with the machine's cores
  (experiments/bench/pipeline.py: ``measure_pipeline``), against the demand of the fastest step
  (its patches/s): a ratio below 1 means the GPU would wait for data;
* whole-volume prediction of a 512 x 512 x 300 CT (a sliding window over the 300 x 512 x 512
  voxel grid, 64^3 windows, 50 % overlap, through dltk_mm.inference.segment.segment_volume,
  experiments/bench/predict.py: ``measure_volume``): seconds and the peak GPU memory
  (``tf.config.experimental.get_memory_info``).

It writes one JSON file (every figure) and one Markdown table (``--output_dir``). Without a GPU
(``--mode=cpu``, or ``auto`` on a CPU machine) the same code runs at tiny sizes (one stream of
width 1/8 with one residual unit per scale, so that tracing and XLA compilation are quick; 16^3
patches; a 32 x 48 x 48 volume) in about a minute on an idle 2-core machine, which a test runs.
Each part runs under ``try``: a failure is recorded in the JSON and the table and the next part
still runs.

Usage (the command of experiments/bench/README.md, "GPU benchmark")::

    python -m experiments.bench.gpu --output_dir=experiments/bench/results
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
from absl import app, flags

from dltk_mm.io.files import atomic_write_text
from experiments.bench.flops import matmul_ceiling
from experiments.bench.pipeline import measure_pipeline
from experiments.bench.predict import measure_volume
from experiments.bench.report import markdown_table
from experiments.bench.train_step import measure

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the script's flags (when it runs as a script; tests import its functions)."""
    flags.DEFINE_enum("mode", "auto", ["auto", "gpu", "cpu"],
                      "Sizes: gpu (the paper's), cpu (tiny), auto (gpu where TensorFlow sees one).")
    flags.DEFINE_string("output_dir", ".", "Folder of gpu_benchmark.json and gpu_benchmark.md.")
    flags.DEFINE_integer("train_steps", None,
                         "Timed training steps per configuration (default: 10 gpu, 2 cpu).")
    flags.DEFINE_float("predict_overlap", 0.5, "Window overlap of the whole-volume prediction.")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one mode measures."""

    width: float
    patch: int
    batch: int
    steps: int
    ceiling_size: int
    ceiling_calls: int
    pipeline_volume: tuple[int, int, int]
    pipeline_steps: int
    pipeline_warmup: int
    volume: tuple[int, int, int]
    predict_batch: int
    scheme: str = "v4"
    network: tuple[tuple[str, Any], ...] = ()


SIZES = {
    "gpu": Sizes(width=1.0, patch=64, batch=16, steps=10, ceiling_size=8192, ceiling_calls=10,
                 pipeline_volume=(100, 160, 160), pipeline_steps=20, pipeline_warmup=5,
                 volume=(300, 512, 512), predict_batch=8),
    "cpu": Sizes(width=0.125, patch=16, batch=2, steps=2, ceiling_size=256, ceiling_calls=3,
                 pipeline_volume=(24, 40, 40), pipeline_steps=3, pipeline_warmup=1,
                 volume=(32, 48, 48), predict_batch=2, scheme="individual",
                 network=(("modalities", ("ct",)), ("num_res_units", 1))),
}

#: Training-step configurations: (name, XLA, mixed precision).
STEP_CONFIGS = (("float32", False, False), ("XLA", True, False),
                ("mixed precision", False, True), ("XLA + mixed precision", True, True))


def device_info() -> dict[str, Any]:
    """The machine: GPU model and compute capability (if any), cores, TensorFlow version."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    info: dict[str, Any] = {
        "tensorflow": tf.__version__, "cores": len(os.sched_getaffinity(0)),
        "cpu": platform.processor() or platform.machine(), "gpus": len(gpus)}
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        info["gpu"] = details.get("device_name", gpus[0].name)
        info["compute_capability"] = ".".join(map(str, details.get("compute_capability", ())))
        info["tf32"] = bool(tf.config.experimental.is_tensor_float_32_execution_enabled())
    return info


def _guarded(name: str, function: Callable[[], dict]) -> dict:
    """Runs one part; a failure becomes ``{"error": ...}`` so that the other parts still run."""
    start = time.perf_counter()
    try:
        result = function()
    except Exception as error:  # noqa: BLE001  (recorded in the report, the run goes on)
        result = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
    result["part_s"] = round(time.perf_counter() - start, 1)
    print(f"{name}: {json.dumps(result)}", flush=True)
    gc.collect()
    return result


def _ceilings(sizes: Sizes, on_gpu: bool) -> dict:
    result = {"float32": dataclasses.asdict(matmul_ceiling(sizes.ceiling_size,
                                                           sizes.ceiling_calls))}
    if on_gpu:  # a CPU emulates float16 matmuls: its float16 rate says nothing
        result["float16"] = dataclasses.asdict(
            matmul_ceiling(sizes.ceiling_size, sizes.ceiling_calls, dtype="float16"))
    return result


def _step(sizes: Sizes, name: str, xla: bool, mixed: bool, on_gpu: bool) -> dict:
    keras.backend.clear_session()  # the previous configuration's model and graphs
    return measure(name, sizes.width, sizes.patch, sizes.batch, xla, mixed, sizes.steps,
                   sizes.ceiling_calls, sizes.scheme, ceiling_size=sizes.ceiling_size,
                   float16_ceiling=on_gpu, **dict(sizes.network))


def _pipeline(sizes: Sizes) -> dict:
    return measure_pipeline(sizes.pipeline_volume, (sizes.patch,) * 3, sizes.batch,
                            sizes.pipeline_steps, sizes.pipeline_warmup)


def _prediction(sizes: Sizes, overlap: float) -> dict:
    keras.backend.clear_session()
    return measure_volume(sizes.volume, width=sizes.width, patch=sizes.patch,
                          batch_size=sizes.predict_batch, overlap=overlap)


def run_benchmark(mode: str, overlap: float = 0.5, steps: int | None = None) -> dict:
    """Every part of the benchmark; returns the report (what the JSON file holds).

    Args:
        mode: ``"gpu"``, ``"cpu"`` or ``"auto"`` (``"gpu"`` where TensorFlow sees a GPU).
        overlap: window overlap of the whole-volume prediction.
        steps: timed training steps per configuration (None: the mode's).
    """
    info = device_info()
    on_gpu = info["gpus"] > 0
    mode = ("gpu" if on_gpu else "cpu") if mode == "auto" else mode
    sizes = SIZES[mode]
    if steps is not None:
        sizes = dataclasses.replace(sizes, steps=steps)
    started = time.perf_counter()
    print(f"machine: {json.dumps(info)}; mode {mode}", flush=True)
    report: dict[str, Any] = {"mode": mode, "machine": info, "sizes": dataclasses.asdict(sizes),
                              "overlap": overlap}
    report["ceiling"] = _guarded("matmul ceiling", lambda: _ceilings(sizes, on_gpu))
    report["training_step"] = [
        _guarded(f"training step, {name}",
                 lambda name=name, xla=xla, mixed=mixed: _step(sizes, name, xla, mixed, on_gpu))
        for name, xla, mixed in STEP_CONFIGS]
    report["pipeline"] = _guarded("input pipeline", lambda: _pipeline(sizes))
    rates = [r["patches_per_s"] for r in report["training_step"] if "patches_per_s" in r]
    if rates and "patches_per_s" in report["pipeline"]:
        report["pipeline"]["step_demand_patches_per_s"] = max(rates)
        report["pipeline"]["supply_to_demand"] = round(
            report["pipeline"]["patches_per_s"] / max(rates), 2)
    report["prediction"] = _guarded("whole-volume prediction", lambda: _prediction(sizes, overlap))
    report["total_s"] = round(time.perf_counter() - started, 1)
    return report


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_report(report: dict) -> str:
    """The report as Markdown: the machine line and one table of every figure."""
    info = report["machine"]
    ceiling = report["ceiling"]
    f32 = ceiling.get("float32", {}).get("gflops")
    f16 = ceiling.get("float16", {}).get("gflops")
    lines = [f"Machine: {info.get('gpu', 'no GPU')} (compute capability "
             f"{info.get('compute_capability', '-')}, TF32 {info.get('tf32', '-')}), "
             f"{info['cores']} cores {info['cpu']}, TensorFlow {info['tensorflow']}; mode "
             f"{report['mode']} ({report['sizes']['width']} width, batch "
             f"{report['sizes']['batch']} of {report['sizes']['patch']}^3); matmul ceiling "
             f"float32 {_cell(f32)} GFLOP/s, float16 {_cell(f16)} GFLOP/s; total "
             f"{report['total_s']} s.", ""]
    rows = []
    for (name, _, _), step in zip(STEP_CONFIGS, report["training_step"], strict=True):
        ratio = step.get("ratio_to_float16_ceiling", step.get("ratio_to_ceiling"))
        figure = ("error: " + step["error"] if "error" in step else
                  f"{step['s_per_step']:.3f} s/step, {step['patches_per_s']:.1f} patches/s, "
                  f"{step['gflops']:.0f} GFLOP/s = {ratio:.0%} of the ceiling (warm-up "
                  f"{step['warmup_s']} s)")
        rows.append((f"training step, {name}", figure))
    pipeline = report["pipeline"]
    rows.append(("input pipeline", "error: " + pipeline["error"] if "error" in pipeline else
                 f"{pipeline['patches_per_s']:.1f} patches/s on {pipeline['cores']} cores; "
                 f"the fastest step needs {_cell(pipeline.get('step_demand_patches_per_s'))} "
                 f"(supply/demand {_cell(pipeline.get('supply_to_demand'), 2)})"))
    predicted = report["prediction"]
    rows.append((f"whole-volume prediction {report['sizes']['volume']}",
                 "error: " + predicted["error"] if "error" in predicted else
                 f"{predicted['seconds']} s, {predicted['windows']} windows at overlap "
                 f"{predicted['overlap']}, peak GPU memory {_cell(predicted['peak_gpu_mb'], 0)} "
                 f"MB, peak RSS {predicted['peak_rss_mb']:.0f} MB"))
    lines.append(markdown_table(["measurement", "result"], rows))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    report = run_benchmark(FLAGS.mode, overlap=FLAGS.predict_overlap, steps=FLAGS.train_steps)
    output = Path(FLAGS.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "gpu_benchmark.json", json.dumps(report, indent=2) + "\n")
    table = markdown_report(report)
    atomic_write_text(output / "gpu_benchmark.md", table)
    print()
    print(table)
    print(f"wrote {output / 'gpu_benchmark.json'} and {output / 'gpu_benchmark.md'}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
