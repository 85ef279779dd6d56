"""The benchmark scripts of experiments/bench: FLOP counts, the matmul ceiling, tiny runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dltk_mm.networks import build_multistream
from experiments.bench.flops import conv_macs, matmul_ceiling, model_conv_macs
from experiments.bench.profiling import layer_of, op_self_times, self_time_tables
from experiments.bench.report import markdown_table
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("options", [
    {}, {"strided_kernel": "code", "upscore_kernel": "code"},
    {"filters": (32, 64, 128, 64, 24)}])  # width 1/8: the deepest scale narrower than the classes
def test_analytic_conv_count_equals_the_built_network(options):
    model = build_multistream("individual", modalities=("mr",), width=0.125,
                              input_shape=(24, 24, 24), **options)
    analytic = sum(c.macs for c in conv_macs(model.build_config, (24, 24, 24)))
    assert analytic == model_conv_macs(model.streams["mr"])


def test_full_width_cost_quoted_in_the_benchmark_readme():
    config = build_multistream("individual", modalities=("mr",), width=0.0625).build_config
    full = dict(config, width=1.0)
    gmac = sum(c.macs for c in conv_macs(full, (64, 64, 64))) / 1e9
    assert gmac == pytest.approx(57.2, abs=0.05)
    assert "57.2 GMAC forward" in (REPO_ROOT / "experiments/bench/README.md").read_text()


def test_matmul_ceiling_reports_the_median_and_the_spread():
    ceiling = matmul_ceiling(size=256, calls=3)
    assert 0 < ceiling.gflops_min <= ceiling.gflops <= ceiling.gflops_max
    assert ceiling.gflops_per_cpu_second > 0 and ceiling.cpu_utilisation > 0


def _run(module: str, *args: str, tmp_path: Path) -> dict:
    out = tmp_path / "result.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", module, *args, f"--json={out}"],
                            capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()) | {"stdout": result.stdout}


def test_training_step_benchmark_tiny_run(tmp_path):
    started = time.perf_counter()
    report = _run("experiments.bench.train_step", "--runs=tiny:0.125:16:2:0:0", "--steps=2",
                  "--ceiling_calls=1", "--timeout=240", tmp_path=tmp_path)
    wall_s = time.perf_counter() - started
    (run,) = report["results"]
    assert (run["name"], run["width"], run["patch"], run["batch"], run["xla"],
            run["mixed_precision"], run["steps"]) == ("tiny", 0.125, 16, 2, False, False, 2)
    # the work per patch is the built network's: 2 FLOPs x 3 passes per MAC of its Conv3D layers
    stream = build_multistream("individual", modalities=("mr",), width=0.125,
                               input_shape=(16, 16, 16)).streams["mr"]
    assert run["gflop_per_patch"] == pytest.approx(6 * model_conv_macs(stream) / 1e9, abs=1e-4)
    # the timed steps happened within the command's own lifetime, after its warm-up
    assert 0 < run["s_per_step"] * run["steps"] < wall_s - run["warmup_s"]
    assert 0 < run["ratio_to_ceiling"] < 2  # a tiny step cannot beat dense matmuls by far
    assert "oneDNN CPU kernels on" in report["stdout"]
    assert "| tiny | 0.125 | 16^3 | 2 | off | off |" in report["stdout"]


def test_training_step_benchmark_reports_a_configuration_past_its_timeout(tmp_path):
    report = _run("experiments.bench.train_step", "--runs=slow:0.125:16:2:0:0", "--steps=1",
                  "--ceiling_calls=1", "--timeout=1", tmp_path=tmp_path)
    (run,) = report["results"]
    assert run["error"].startswith("not finished within 1 s") and "s_per_step" not in run
    assert "| slow | 0.125 | 16^3 | 2 | off | off | not finished within 1 s" in report["stdout"]


#: XLA's cheapest CPU code generation (no LLVM optimisation, no XNNPACK, the older emitters):
#: the two XLA steps of the GPU script's CPU mode compile in about a third of the CPU time; the
#: test checks that every part runs and reports, not how fast the XLA code is.
FAST_XLA_COMPILE = ("--xla_backend_optimization_level=0 --xla_cpu_use_xnnpack=false "
                    "--xla_cpu_use_fusion_emitters=false")


def test_gpu_benchmark_runs_its_cpu_mode(tmp_path):
    """The GPU script's CPU mode: every part measured, one JSON and one Markdown table."""
    from dltk_mm.inference.sliding_window import count_windows
    from experiments.bench.gpu import SIZES, STEP_CONFIGS

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT),
           "CUDA_VISIBLE_DEVICES": "", "XLA_FLAGS": FAST_XLA_COMPILE}
    result = subprocess.run([sys.executable, "-m", "experiments.bench.gpu", "--mode=auto",
                             "--train_steps=1", f"--output_dir={tmp_path}"],
                            capture_output=True, text=True,
                            env=env, timeout=900, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_benchmark.json").read_text())
    assert report["mode"] == "cpu" and report["machine"]["gpus"] == 0
    sizes = SIZES["cpu"]
    steps = report["training_step"]
    assert [(r["xla"], r["mixed_precision"]) for r in steps] == [
        (xla, mixed) for _, xla, mixed in STEP_CONFIGS]
    assert all(r["s_per_step"] > 0 and r["batch"] == sizes.batch and r["steps"] == 1
               for r in steps)
    pipeline = report["pipeline"]
    assert pipeline["batch_size"] == sizes.batch and pipeline["patches_per_s"] > 0
    assert pipeline["step_demand_patches_per_s"] == max(r["patches_per_s"] for r in steps)
    prediction = report["prediction"]
    assert prediction["size"] == "x".join(map(str, sizes.volume))
    assert prediction["windows"] == count_windows(sizes.volume, (sizes.patch,) * 3, 0.5)
    assert prediction["seconds"] > 0 and prediction["peak_gpu_mb"] is None
    assert report["ceiling"]["float32"]["gflops"] > 0
    table = (tmp_path / "gpu_benchmark.md").read_text()
    for name, _, _ in STEP_CONFIGS:
        assert f"| training step, {name} | " in table
    assert "error" not in table and "| input pipeline |" in table


@pytest.mark.parametrize(("op_name", "layer"), [
    ("switch_case/indexed_case/branch1/_1/gradient_tape/switch_case/indexed_case/stream_ct_1/"
     "enc1_unit1_conv0_ct_1/convolution/Conv3DBackpropFilterV2", "enc1_unit1_conv0"),
    ("switch_case/indexed_case/stream_mr_1/enc4_unit0_conv1_1/convolution", "enc4_unit0_conv1"),
    ("switch_case/indexed_case/switch_case/indexed_case/Softmax", "Softmax"),
])
def test_profile_names_fold_modalities(op_name, layer):
    assert layer_of(op_name) == layer


def test_profile_of_a_traced_function(tmp_path):
    import tensorflow as tf

    x = tf.random.normal((1, 8, 8, 8, 4))
    kernel = tf.random.normal((3, 3, 3, 4, 4))
    conv = tf.function(lambda t: tf.nn.conv3d(t, kernel, [1] * 5, "SAME"))
    conv(x)
    tf.profiler.experimental.start(str(tmp_path))
    conv(x).numpy()
    tf.profiler.experimental.stop()
    ops = op_self_times(tmp_path)
    assert any("Conv3D" in op_type for op_type, _, _ in ops)
    assert all(seconds >= 0 for _, _, seconds in ops)
    table = self_time_tables(ops, top=3)
    assert "| op type | self time s | share |" in table and "Conv3D" in table


def test_markdown_table():
    table = markdown_table(["a", "b"], [(1, "x"), (2.5, "")])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2.5 |  |"]


def test_gpu_benchmark_table_records_a_failed_part():
    from experiments.bench.gpu import STEP_CONFIGS, markdown_report

    step = {"s_per_step": 0.05, "patches_per_s": 320.0, "gflops": 90000.0, "warmup_s": 40.0,
            "ratio_to_ceiling": 0.3, "ratio_to_float16_ceiling": 0.2}
    report = {
        "mode": "gpu", "total_s": 300.0, "sizes": {"width": 1.0, "batch": 16, "patch": 64,
                                                    "volume": [300, 512, 512]},
        "machine": {"gpu": "NVIDIA H200", "compute_capability": "9.0", "tf32": True, "cores": 16,
                    "cpu": "x86_64", "tensorflow": "2.21.0"},
        "ceiling": {"float32": {"gflops": 300000.0}, "float16": {"gflops": 450000.0}},
        "training_step": [step, step, step, {"error": "ResourceExhaustedError: OOM"}],
        "pipeline": {"patches_per_s": 1600.0, "cores": 16, "step_demand_patches_per_s": 320.0,
                     "supply_to_demand": 5.0},
        "prediction": {"seconds": 12.5, "windows": 2025, "overlap": 0.5, "peak_gpu_mb": 9000.0,
                       "peak_rss_mb": 4000.0},
    }
    table = markdown_report(report)
    assert "NVIDIA H200 (compute capability 9.0, TF32 True)" in table
    assert "| training step, float32 | 0.050 s/step, 320.0 patches/s, 90000 GFLOP/s = 20% " in table
    assert f"| training step, {STEP_CONFIGS[3][0]} | error: ResourceExhaustedError: OOM |" in table
    assert "supply/demand 5.00" in table and "peak GPU memory 9000 MB" in table


# --- the PyTorch / MONAI peers (issue 15): only where the benchmark environment is ------------

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_MONAI = HAS_TORCH and importlib.util.find_spec("monai") is not None
requires_torch = pytest.mark.skipif(
    not HAS_TORCH, reason="PyTorch is not installed: it is a dependency of the benchmark "
    "environment only (experiments/bench/README.md, 'PyTorch and MONAI peers'), not of dltk_mm")
requires_monai = pytest.mark.skipif(
    not HAS_MONAI, reason="PyTorch and MONAI are not installed: dependencies of the benchmark "
    "environment only (experiments/bench/README.md, 'PyTorch and MONAI peers')")


def _keras_weights_into(torch_model, stream) -> None:
    """Copies a Keras stream's weights into the TorchFCN (layers matched by name)."""
    import torch

    for layer in stream.layers:
        if not layer.weights:
            continue
        module = torch_model.layers[layer.name.removesuffix("_ct")]
        weights = [torch.from_numpy(np.asarray(w)) for w in layer.get_weights()]
        if isinstance(module, torch.nn.BatchNorm3d):
            for tensor, value in zip((module.weight, module.bias, module.running_mean,
                                      module.running_var), weights, strict=True):
                tensor.data.copy_(value)
        else:  # (kz, ky, kx, in, out) -> (out, in, kz, ky, kx)
            (kernel,) = weights
            module.conv.weight.data.copy_(kernel.permute(4, 3, 0, 1, 2))


#: At width 1/8: 4, 8, 16, 8, 3 channels: a shrinking scale (a 1^3 projection shortcut) and a
#: deepest scale narrower than the 5 classes (a reduction convolution that widens).
NARROWING = {"strided_kernel": "code", "filters": (32, 64, 128, 64, 24)}


@requires_torch
@pytest.mark.parametrize("options", [{}, NARROWING])
def test_torch_fcn_is_the_keras_fcn(options):
    """Same parameters, and with the Keras weights the same logits (inference and training)."""
    import torch

    from dltk_mm.networks import build_multistream
    from experiments.bench.peer import fcn_layout, network_config
    from experiments.bench.torch_fcn import MEMORY_FORMAT, TorchFCN, parameter_count

    model = build_multistream("individual", modalities=("ct",), width=0.125,
                              input_shape=(16, 16, 16), **options)
    stream = model.streams["ct"]
    layout = fcn_layout(model.build_config)
    # the parent scripts build the layout without a model, from the same defaults
    assert layout == fcn_layout(network_config(0.125, modalities=("ct",), **options))
    torch_model = TorchFCN(layout)
    trainable = sum(int(np.prod(v.shape)) for v in stream.trainable_weights)
    statistics = sum(int(np.prod(v.shape)) for v in stream.non_trainable_weights)
    assert parameter_count(torch_model) == trainable
    assert sum(b.numel() for name, b in torch_model.named_buffers()
               if name.endswith(("running_mean", "running_var"))) == statistics
    if options:
        assert {"enc4_unit0_shortcut_conv", "dec3_reduce"} <= set(torch_model.layers)
    _keras_weights_into(torch_model, stream)
    torch_model = torch_model.to(memory_format=MEMORY_FORMAT)
    image = np.random.default_rng(1).normal(size=(2, 16, 16, 16, 1)).astype(np.float32)
    torch_image = torch.from_numpy(image).permute(0, 4, 1, 2, 3).contiguous(
        memory_format=MEMORY_FORMAT)
    for training in (False, True):
        torch_model.train(training)
        with torch.no_grad():
            logits = torch_model(torch_image).permute(0, 2, 3, 4, 1).numpy()
        expected = stream(image, training=training)["logits"].numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-4 * np.abs(expected).max())


@requires_torch
def test_torch_soft_dice_is_dltk_mms():
    import torch

    from dltk_mm.core.losses import dice_loss
    from experiments.bench.torch_fcn import soft_dice_loss

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 8, 8, 8, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 4, size=(2, 8, 8, 8))  # class 4 absent: Dice 0 there, as dltk_mm
    expected = float(dice_loss(labels, logits))
    got = float(soft_dice_loss(torch.from_numpy(logits).permute(0, 4, 1, 2, 3),
                               torch.from_numpy(labels)))
    assert got == pytest.approx(expected, abs=1e-6)


@requires_torch
def test_training_step_benchmark_peer_tiny_run(tmp_path):
    report = _run("experiments.bench.train_step", "--runs=tiny:0.125:16:2:0:0", "--steps=1",
                  "--ceiling_calls=1", "--timeout=240", "--peer", tmp_path=tmp_path)
    (ours,) = report["results"]
    (theirs,) = report["pytorch_results"]
    (summary,) = report["peer"]
    assert ours["s_per_step"] > 0 and theirs["s_per_step"] > 0
    assert theirs["framework"] == "pytorch" and theirs["memory_format"] == "channels_last_3d"
    assert (theirs["patch"], theirs["batch"], theirs["steps"]) == (16, 2, 1)
    assert ours["stream_parameters"] == theirs["parameters"] == summary["pytorch_parameters"]
    assert summary["dltk_mm_s_per_step"] == ours["s_per_step"]
    assert summary["ratio_pytorch_to_dltk_mm"] == pytest.approx(
        theirs["s_per_step"] / ours["s_per_step"], abs=1e-3)
    assert "faster by" in summary["result"] and summary["result"] in report["stdout"]
    assert "| tiny | 0.125 | 16^3 | 2 | off | off | " in report["stdout"]


@requires_monai
def test_prediction_benchmark_peer_tiny_run(tmp_path):
    from dltk_mm.inference.sliding_window import count_windows

    report = _run("experiments.bench.predict", "--sizes=16x32x32,16x32x64", "--width=0.125",
                  "--patch=16", "--batch_size=2", "--overlap=0.5", "--weighting=gaussian",
                  "--ceiling=50", "--ceiling_per_cpu_s=50", "--peer", tmp_path=tmp_path)
    ours, theirs = report["results"], report["monai_results"]
    assert [r["size"] for r in theirs] == ["16x32x32", "16x32x64"]
    for mine, peer in zip(ours, theirs, strict=True):
        shape = tuple(int(s) for s in mine["size"].split("x"))
        assert mine["windows"] == peer["windows"] == count_windows(shape, (16,) * 3, 0.5)
        assert mine["parameters"] == peer["parameters"]
        assert peer["mode"] == "gaussian" and mine["weighting"] == "gaussian"
        assert mine["peak_rss_mb"] > 0 and peer["peak_rss_mb"] > 0 and peer["seconds"] > 0
    assert "| 16x32x64 | 32,768 | 21 / 21 | " in report["stdout"]
    assert "x2.00 voxels, x2.33 windows" in report["stdout"]


@pytest.mark.parametrize("module", [
    pytest.param("experiments.bench.train_step",
                 marks=pytest.mark.skipif(HAS_TORCH, reason="PyTorch is installed here")),
    pytest.param("experiments.bench.predict", marks=pytest.mark.skipif(
        HAS_MONAI, reason="PyTorch and MONAI are installed here"))])
def test_peer_without_torch_names_the_benchmark_environment(module):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", module, "--peer"], capture_output=True,
                            text=True, env=env, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 1 and "RESULT" not in result.stdout
    assert "--peer needs torch" in result.stderr or "--peer needs monai" in result.stderr
    assert "/work/benchvenv/bin/pip install torch==2.13.0" in result.stderr
    assert f"/work/benchvenv/bin/python -m {module} --peer" in result.stderr
