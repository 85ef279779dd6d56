"""The benchmark scripts of experiments/bench: FLOP counts, the matmul ceiling, tiny runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dltk_mm.networks import build_multistream
from experiments.bench.flops import conv_macs, matmul_ceiling, model_conv_macs
from experiments.bench.profiling import layer_of, op_self_times, self_time_tables
from experiments.bench.report import markdown_table
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("options", [{}, {"strided_kernel": "code", "upscore_kernel": "code"}])
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
    report = _run("experiments.bench.train_step", "--runs=tiny:0.125:16:2:0:0", "--steps=2",
                  "--ceiling_calls=1", "--timeout=240", tmp_path=tmp_path)
    (run,) = report["results"]
    assert run["name"] == "tiny" and run["s_per_step"] > 0
    # (the report rounds GFLOP/s to 0.1 and ratios to 0.001)
    assert run["gflops"] == pytest.approx(run["patches_per_s"] * run["gflop_per_patch"], abs=0.1)
    assert run["ratio_to_ceiling"] == pytest.approx(run["gflops"] / run["ceiling_gflops"],
                                                    abs=0.002)
    assert "oneDNN CPU kernels on" in report["stdout"]
    assert "| tiny | 0.125 | 16^3 | 2 |" in report["stdout"]


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
