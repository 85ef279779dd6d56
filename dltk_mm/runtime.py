"""TensorFlow runtime settings that dltk_mm chooses before TensorFlow is imported.

TensorFlow reads some settings from the environment once, when it is imported. ``import dltk_mm``
fills in dltk_mm's defaults for them (:data:`ENVIRONMENT_DEFAULTS`), never overriding a value the
user has set, so that ``TF_ENABLE_ONEDNN_OPTS=0 dltk-mm-train ...`` still turns oneDNN off.

Why oneDNN is on by default: the pip wheels of TensorFlow 2.21 enable the oneDNN CPU kernels only
on CPUs with AVX-512; elsewhere (AVX2 machines such as most cloud AMD EPYC vCPUs) 3-D convolutions
and their gradients fall back to generic Eigen kernels. On a 2-core AVX2 machine oneDNN made the
gradients of single FCN layers 1.1-9x faster, and a full-width training step took 6.9 s instead of
12.6 s (experiments/bench/README.md, "How the step got here"). oneDNN
sums in a different order, so results differ from the generic kernels by float32 round-off.
Settings that only affect CPU kernels change nothing on a GPU.

TensorFlow's start-up messages: the ``dltk-mm-*`` commands call :func:`quiet_tensorflow_startup`
(in ``dltk_mm.cli``). Where the user has not set ``TF_CPP_MIN_LOG_LEVEL`` it is set to
:data:`DEFAULT_TF_LOG_LEVEL` (2: TensorFlow's C++ INFO and WARNING lines hidden, errors shown).
TensorFlow 2.21 prints its first lines before its logging is initialised, ignoring the
variable, so the import of TensorFlow (and the first look for a GPU) runs with the process's
stderr captured, and every captured line is written back except those below the level
(``I...``/``W...`` lines, the "All log messages before absl::InitializeLog()" banner, the CPU
instruction note) and, on a machine without a CUDA driver, the ``failed call to cuInit`` error
that follows from it. Anything else (a real error, a Python warning) is written back unchanged.
A user's own ``TF_CPP_MIN_LOG_LEVEL`` wins: ``TF_CPP_MIN_LOG_LEVEL=0 dltk-mm-train ...`` shows
everything.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from absl import logging

#: Environment variables dltk_mm sets when they are unset, before TensorFlow is imported.
ENVIRONMENT_DEFAULTS: dict[str, str] = {"TF_ENABLE_ONEDNN_OPTS": "1"}


def apply_environment_defaults() -> dict[str, str]:
    """Sets each unset variable of :data:`ENVIRONMENT_DEFAULTS`; called by ``import dltk_mm``.

    Returns:
        The variables this call set (empty where the user set them all, or on a second call).
    """
    applied = {}
    for name, value in ENVIRONMENT_DEFAULTS.items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    if applied and "tensorflow" in sys.modules:
        logging.warning(
            "TensorFlow was imported before dltk_mm, so %s may not take effect; import dltk_mm "
            "first or set it in the environment", ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied


def onednn_enabled() -> bool:
    """Whether this TensorFlow process runs its CPU kernels through oneDNN."""
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own build/runtime query

    return bool(_pywrap_util_port.IsMklEnabled())


#: TensorFlow's C++ log level of the commands where the user has not set TF_CPP_MIN_LOG_LEVEL.
DEFAULT_TF_LOG_LEVEL = "2"

_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_LOG_LINE = re.compile(r"^([IWEF])\d{4} ")
_PRE_INIT_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written"
_CPU_NOTE = "To enable the following instructions:"  # continues an INFO line
_NO_DRIVER = "Could not find cuda drivers on your machine"
_CUINIT_FAILED = re.compile(r"failed call to cuInit")


def filter_startup_lines(text: str, level: int) -> str:
    """TensorFlow's start-up output without the lines below ``level`` (see the module docstring).

    Args:
        text: what TensorFlow (and anything else) wrote to stderr during its start-up.
        level: the effective TF_CPP_MIN_LOG_LEVEL (0 keeps everything).

    Returns:
        The lines to show, in their order, each with its line end.
    """
    if level <= 0:
        return text
    no_driver = _NO_DRIVER in text
    kept = []
    for line in text.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if match and _SEVERITY[match.group(1)] < level:
            continue
        if line.startswith((_PRE_INIT_BANNER, _CPU_NOTE)):
            continue
        if no_driver and match and _CUINIT_FAILED.search(line):
            continue  # the expected consequence of having no CUDA driver: not an error here
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def _filtered_stderr(level: int) -> Iterator[None]:
    """Captures file descriptor 2 (C++ and Python output alike) and writes back what to show."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            shown = filter_startup_lines(capture.read().decode(errors="replace"), level)
            if shown:
                sys.stderr.write(shown)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's import, and its first look for a GPU, inside :func:`_filtered_stderr`."""

    def __init__(self, loader: Any, level: int) -> None:
        self.loader = loader
        self.level = level

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with _filtered_stderr(self.level):
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader
            self.loader.exec_module(module)
            # CUDA's start-up lines come with the first look for a GPU; a failure here would
            # come again, unfiltered, where the program itself first asks.
            with contextlib.suppress(Exception):
                module.config.list_physical_devices("GPU")


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, the usual way, and hands it to :class:`_QuietLoader`."""

    def __init__(self, level: int) -> None:
        self.level = level

    def find_spec(self, fullname: str, path: Any = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self.level)
        return spec


def quiet_tensorflow_startup() -> int:
    """Keeps TensorFlow's start-up noise out of stderr (the commands call it; see the module).

    Sets TF_CPP_MIN_LOG_LEVEL to :data:`DEFAULT_TF_LOG_LEVEL` where the user has not set it, and,
    if TensorFlow is not imported yet, filters what its import writes to stderr by that level.

    Returns:
        The effective level.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", DEFAULT_TF_LOG_LEVEL)
    try:
        level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        level = 0  # TensorFlow ignores a value it cannot read; show everything too
    if level > 0 and "tensorflow" not in sys.modules and not any(
            isinstance(finder, _QuietFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder(level))
    return level


__all__ = [
    "DEFAULT_TF_LOG_LEVEL",
    "ENVIRONMENT_DEFAULTS",
    "apply_environment_defaults",
    "filter_startup_lines",
    "onednn_enabled",
    "quiet_tensorflow_startup",
]
