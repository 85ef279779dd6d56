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
