"""Distributed routed training: two workers (MultiWorkerMirroredStrategy on localhost ports) and two
replicas (MirroredStrategy over two logical CPU devices) train v4 on phantoms, keep identical
weights on every worker/replica, write checkpoints from the chief only, and resume from them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dltk_mm.errors import ConfigurationError
from dltk_mm.io.phantoms import PhantomConfig, generate_phantom_dataset
from dltk_mm.io.pipeline import PipelineConfig
from dltk_mm.io.preprocessing import PreprocessingConfig
from dltk_mm.training import NetworkConfig, TrainConfig
from dltk_mm.training.checkpointing import checkpoint_step, latest_checkpoint
from dltk_mm.training.data import load_training_data
from dltk_mm.training.distribute import (
    check_global_batch,
    create_strategy,
    read_tf_config,
    worker_info,
)
from tests.conftest import REPO_ROOT

STEPS = 2
TIMEOUT_S = 240

WORKER = textwrap.dedent('''
    """One training process: optional logical CPUs, strategy, train(), dump every variable."""
    import json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    config_path, model_dir, out, logical_cpus = sys.argv[1:5]
    if int(logical_cpus) > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(logical_cpus))
    from dltk_mm.training import TrainConfig, TrainingCallback, train
    from dltk_mm.training.distribute import create_strategy, worker_info

    config = TrainConfig.load(config_path)
    strategy = create_strategy(config.strategy)  # before any other TensorFlow op

    class Grab(TrainingCallback):
        def on_train_begin(self, info):
            self.model = info.model

    grab = Grab()
    result = train(config, model_dir, callbacks=[grab], strategy=strategy)
    arrays = {}
    seen = set()
    for stream in grab.model.streams.values():
        for variable in stream.weights:
            if variable.path in seen:
                continue
            seen.add(variable.path)
            value = variable.value
            parts = getattr(value, "values", None) or (value,)
            for i, part in enumerate(parts):
                arrays[f"{variable.path}#{i}"] = np.asarray(part.numpy())
    np.savez(out, **arrays)
    info = worker_info(strategy)
    with open(out + ".json", "w") as f:
        json.dump({"initial_step": result.initial_step, "step": result.step,
                   "replicas": strategy.num_replicas_in_sync, "chief": info.is_chief,
                   "workers": info.num_workers, "optimizer_iterations":
                   int(grab.model.optimizer.iterations.numpy())}, f)
''')


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("distribute")
    summary = generate_phantom_dataset(root / "data", num_ct=2, num_mr=2, seed=3,
                                       config=PhantomConfig(matrix={"ct": 48, "mr": 48}))
    script = root / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    base = dict(
        manifest=str(summary.manifest_path), scheme="v4", modalities=("mr", "ct"), fold=-1,
        network=NetworkConfig(filters=(2, 4, 4, 4, 8), num_res_units=1),
        preprocessing=PreprocessingConfig(spacing_mm=8.0), cache_dir=str(root / "cache"),
        pipeline=PipelineConfig(patch_size=(16, 16, 16), batch_size=4, shuffle_buffer=16),
        steps=STEPS, checkpoint_interval=1, log_interval=1,
    )
    load_training_data(TrainConfig(**base), root / "cache")  # fill the cache once
    return {"root": root, "script": script, "base": base}


def _environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)})
    env.update(extra or {})
    return env


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run_all(commands: list[tuple[list[str], dict[str, str]]]) -> None:
    """Starts the processes together; waits (bounded); kills every one on failure."""
    processes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for cmd, env in commands]
    outputs = []
    try:
        for process in processes:
            out, _ = process.communicate(timeout=TIMEOUT_S)
            outputs.append(out)
            assert process.returncode == 0, out[-4000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _load(out: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(out) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads(Path(f"{out}.json").read_text())


def _assert_identical(*weight_sets: dict[str, np.ndarray]) -> None:
    first = weight_sets[0]
    for other in weight_sets[1:]:
        assert set(other) == set(first)
        for key in first:
            np.testing.assert_array_equal(first[key], other[key], err_msg=key)


def _group_replicas(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """``{path#i}`` -> one ``{path: value}`` dict per replica."""
    count = 1 + max(int(k.rsplit("#", 1)[1]) for k in arrays)
    return [{k.rsplit("#", 1)[0]: v for k, v in arrays.items() if k.endswith(f"#{i}")}
            for i in range(count)]


def test_multi_worker_two_processes_stay_identical_and_resume(setup: dict) -> None:
    root, script = setup["root"], setup["script"]
    model_dir = root / "multi_worker"
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}

    def run(steps: int, tag: str) -> list[tuple[dict, dict]]:
        config = TrainConfig(**{**setup["base"], "strategy": "multi_worker", "steps": steps})
        config_path = config.save(root / f"mw_{tag}.json")
        commands = []
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                 "index": index}})
            out = root / f"mw_{tag}_{index}.npz"
            commands.append(([sys.executable, str(script), str(config_path), str(model_dir),
                              str(out), "1"], _environment({"TF_CONFIG": tf_config})))
        _run_all(commands)
        return [_load(root / f"mw_{tag}_{i}.npz") for i in range(2)]

    (w0, i0), (w1, i1) = run(STEPS, "first")
    assert i0["chief"] and not i1["chief"] and i0["workers"] == i1["workers"] == 2
    assert i0["replicas"] == 2 and i0["step"] == i1["step"] == STEPS
    assert i0["optimizer_iterations"] == STEPS
    _assert_identical(w0, w1)  # weights and batch-norm statistics, every shared/specific layer
    prefix = latest_checkpoint(model_dir)
    assert prefix is not None and checkpoint_step(prefix) == STEPS
    assert (model_dir / "config.json").is_file() and (model_dir / "history.csv").is_file()

    (r0, j0), (r1, j1) = run(STEPS + 1, "resumed")
    assert j0["initial_step"] == j1["initial_step"] == STEPS
    assert j0["step"] == j1["step"] == STEPS + 1 and j0["optimizer_iterations"] == STEPS + 1
    _assert_identical(r0, r1)
    assert any(not np.array_equal(w0[k], r0[k]) for k in w0)  # it trained on
    assert checkpoint_step(latest_checkpoint(model_dir)) == STEPS + 1


def test_mirrored_two_logical_cpus_stay_identical_and_resume(setup: dict) -> None:
    root, script = setup["root"], setup["script"]
    model_dir = root / "mirrored"

    def run(steps: int, tag: str) -> tuple[list[dict], dict]:
        config = TrainConfig(**{**setup["base"], "strategy": "mirrored", "steps": steps})
        config_path = config.save(root / f"mirrored_{tag}.json")
        out = root / f"mirrored_{tag}.npz"
        _run_all([([sys.executable, str(script), str(config_path), str(model_dir), str(out),
                    "2"], _environment())])
        arrays, info = _load(out)
        return _group_replicas(arrays), info

    replicas, info = run(STEPS, "first")
    assert info["replicas"] == 2 and len(replicas) == 2 and info["step"] == STEPS
    _assert_identical(*replicas)
    assert checkpoint_step(latest_checkpoint(model_dir)) == STEPS

    resumed, info = run(STEPS + 1, "resumed")
    assert info["initial_step"] == STEPS and info["step"] == STEPS + 1
    assert info["optimizer_iterations"] == STEPS + 1
    _assert_identical(*resumed)
    assert any(not np.array_equal(replicas[0][k], resumed[0][k]) for k in replicas[0])


def test_strategy_helpers_validate_their_input(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="unknown strategy"):
        create_strategy("horovod")
    default = create_strategy("default")
    assert worker_info(default).is_chief and worker_info(default).num_workers == 1
    with pytest.raises(ConfigurationError, match="divisible"):
        check_global_batch(3, 2)
    assert check_global_batch(16, 4) == 4
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigurationError, match="TF_CONFIG"):
        read_tf_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}}))
    with pytest.raises(ConfigurationError, match="task"):
        read_tf_config()
