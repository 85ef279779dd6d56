"""dltk_mm.runtime: TensorFlow environment defaults applied by ``import dltk_mm``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from absl import logging

from dltk_mm import runtime
from tests.conftest import REPO_ROOT

QUERY = "import dltk_mm; from dltk_mm.runtime import onednn_enabled; print(onednn_enabled())"


def _run_query(**overrides: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in overrides}
    env.update({k: v for k, v in overrides.items() if v is not None})
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)})
    result = subprocess.run([sys.executable, "-c", QUERY], capture_output=True, text=True,
                            env=env, timeout=120, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_import_turns_onednn_on_where_the_environment_is_silent():
    assert _run_query(TF_ENABLE_ONEDNN_OPTS=None) == "True"


def test_the_users_setting_wins():
    assert _run_query(TF_ENABLE_ONEDNN_OPTS="0") == "False"


def test_defaults_fill_only_unset_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    assert runtime.apply_environment_defaults() == {"TF_ENABLE_ONEDNN_OPTS": "1"}
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert runtime.apply_environment_defaults() == {}
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert runtime.apply_environment_defaults() == {}
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_warns_when_tensorflow_came_first(monkeypatch: pytest.MonkeyPatch):
    import tensorflow  # noqa: F401  (already imported by the test session; made explicit)

    messages = []
    monkeypatch.setattr(logging, "warning", lambda msg, *args: messages.append(msg % args))
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    runtime.apply_environment_defaults()
    assert len(messages) == 1 and "import dltk_mm first" in messages[0]


STARTUP = "import sys; import dltk_mm.cli; import tensorflow as tf; tf.constant(1.0) + 1"


def _startup_stderr(level: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    result = subprocess.run([sys.executable, "-c", STARTUP], capture_output=True, text=True,
                            env=env, timeout=120, check=True)
    return result.stderr


def test_commands_keep_tensorflows_startup_lines_out_of_stderr():
    stderr = _startup_stderr(None)
    assert "absl::InitializeLog" not in stderr
    assert not [line for line in stderr.splitlines() if line[:1] in "IW" and line[1:5].isdigit()]
    assert "cuInit" not in stderr


def test_the_users_log_level_wins():
    stderr = _startup_stderr("0")
    assert "absl::InitializeLog" in stderr  # TensorFlow's own start-up lines, all of them


NO_DRIVER_STARTUP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1.0  1 port.cc:153] oneDNN custom operations are on.\n"
    "I0000 00:00:1.0  1 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.\n"
    "I0000 00:00:1.0  1 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow\n"
    "W0000 00:00:1.0  1 some.cc:1] a warning\n"
    "E0000 00:00:1.0  1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)\n"
    "E0000 00:00:1.0  1 other.cc:9] a real error\n"
    "/x.py:1: UserWarning: a Python warning\n"
)


def test_startup_filter_keeps_errors_and_anything_unknown():
    shown = runtime.filter_startup_lines(NO_DRIVER_STARTUP, level=2)
    assert shown == ("E0000 00:00:1.0  1 other.cc:9] a real error\n"
                     "/x.py:1: UserWarning: a Python warning\n")
    assert "W0000" in runtime.filter_startup_lines(NO_DRIVER_STARTUP, level=1)
    assert runtime.filter_startup_lines(NO_DRIVER_STARTUP, level=0) == NO_DRIVER_STARTUP
    # with a CUDA driver present, a failing cuInit is a real error and shows
    with_driver = "".join(line + "\n" for line in NO_DRIVER_STARTUP.splitlines()
                          if "Could not find cuda drivers" not in line)
    assert "failed call to cuInit" in runtime.filter_startup_lines(with_driver, level=2)


def test_default_log_level_only_where_the_user_has_not_set_one(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    assert runtime.quiet_tensorflow_startup() == 1
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    assert runtime.quiet_tensorflow_startup() == int(runtime.DEFAULT_TF_LOG_LEVEL)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == runtime.DEFAULT_TF_LOG_LEVEL
