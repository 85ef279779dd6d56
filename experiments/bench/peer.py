"""What the ``--peer`` benchmarks share: the benchmark environment, the FCN layout, the ratio.

``experiments/bench/train_step.py --peer`` and ``experiments/bench/predict.py --peer`` time the
same FCN in PyTorch (and MONAI's sliding window) beside dltk_mm, each in a child process of
experiments/bench/torch_fcn.py. PyTorch and MONAI are never dltk_mm dependencies: they live in a
separate virtual environment that also sees the installed TensorFlow and dltk_mm
(:data:`BENCH_VENV_COMMANDS`; experiments/bench/README.md, "PyTorch and MONAI peers"). This module
imports neither torch nor TensorFlow (:func:`fcn_layout` imports dltk_mm's FLOP count when
called), so that the scripts import torch only in the child of ``--peer``.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from collections.abc import Sequence
from typing import Any

#: How the benchmark environment is made (experiments/bench/README.md, "PyTorch and MONAI peers").
BENCH_VENV_COMMANDS = (
    "python -m venv --system-site-packages /work/benchvenv",
    "/work/benchvenv/bin/pip install torch==2.13.0",
    "/work/benchvenv/bin/pip install monai",
)


def missing_peer(modules: Sequence[str], script: str) -> str | None:
    """``None`` when every module is importable here, else the message that names the
    benchmark environment's commands and how to run ``script`` (a module name) there (the
    modules are looked up, not imported)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    commands = "\n".join(f"    {command}" for command in BENCH_VENV_COMMANDS)
    return (f"--peer needs {' and '.join(missing)}, which {sys.executable} cannot import. "
            "PyTorch and MONAI are not dltk_mm dependencies; make the benchmark environment "
            f"(experiments/bench/README.md, 'PyTorch and MONAI peers'):\n{commands}\n"
            f"and run the script with its Python: /work/benchvenv/bin/python -m {script} --peer")


def network_config(width: float, **network: Any) -> dict[str, Any]:
    """The build configuration of :func:`dltk_mm.networks.build_multistream` at ``width`` with
    ``network``'s arguments and the function's defaults for the rest (no network is built)."""
    from dltk_mm.networks import build_multistream

    defaults = {name: parameter.default
                for name, parameter in inspect.signature(build_multistream).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    return defaults | network | {"width": width}


def adam_settings(scheme: str) -> dict[str, float]:
    """dltk_mm's Adam for ``scheme`` (:func:`dltk_mm.networks.make_optimizer`: the scheme's
    learning rate and the function's betas and epsilon) as the PyTorch child's arguments."""
    from dltk_mm.networks import default_learning_rate, make_optimizer

    parameters = inspect.signature(make_optimizer).parameters
    return {"learning_rate": default_learning_rate(scheme)} | {
        name: float(parameters[name].default) for name in ("beta_1", "beta_2", "epsilon")}


def fcn_layout(build_config: dict[str, Any]) -> dict[str, Any]:
    """The description of one dltk_mm FCN stream that :class:`~experiments.bench.torch_fcn.TorchFCN`
    is built from (JSON-serialisable).

    Its convolutions come from :func:`experiments.bench.flops.conv_macs` (the analytic count,
    tested equal to the built Keras network's layers): name, kernel, input and output channels.

    Args:
        build_config: ``MultiStreamModel.build_config`` or :func:`network_config`.
    """
    from dltk_mm.networks.fcn import normalise_strides
    from experiments.bench.flops import conv_macs

    convs = {cost.name: {"kernel": list(cost.kernel), "in": cost.in_channels,
                         "out": cost.out_channels} for cost in conv_macs(build_config, (64,) * 3)}
    return {
        "convs": convs,
        "strides": [list(s) for s in normalise_strides(build_config["strides"])],
        "num_res_units": int(build_config["num_res_units"]),
        "num_classes": int(build_config["num_classes"]),
        "leaky_relu_alpha": float(build_config["leaky_relu_alpha"]),
        "batch_norm_momentum": float(build_config["batch_norm_momentum"]),
        "batch_norm_epsilon": float(build_config["batch_norm_epsilon"]),
        "upsample_border": build_config["upsample_border"],
    }


def peer_command(task: str, layout: dict[str, Any], **arguments: Any) -> list[str]:
    """The command line of one PyTorch child (``python -m experiments.bench.torch_fcn``)."""
    return [sys.executable, "-m", "experiments.bench.torch_fcn", task,
            f"--layout={json.dumps(layout, separators=(',', ':'))}",
            *(f"--{name}={value}" for name, value in arguments.items())]


def speedup(dltk_mm_seconds: float, peer_seconds: float) -> str:
    """``"dltk_mm faster by 1.52x"`` or ``"PyTorch faster by 1.10x"`` (ratio of the times)."""
    if dltk_mm_seconds <= peer_seconds:
        return f"dltk_mm faster by {peer_seconds / dltk_mm_seconds:.2f}x"
    return f"PyTorch faster by {dltk_mm_seconds / peer_seconds:.2f}x"


__all__ = ["BENCH_VENV_COMMANDS", "adam_settings", "fcn_layout", "missing_peer", "network_config",
           "peer_command", "speedup"]
