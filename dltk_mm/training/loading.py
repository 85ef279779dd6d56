"""Loading a trained model back from its model folder (for prediction and export).

A model folder written by :func:`dltk_mm.training.train` holds ``config.json`` (the complete
:class:`~dltk_mm.training.config.TrainConfig`), the newest training checkpoints and, when the run
validated, the best weights. :func:`load_trained_model` rebuilds the network from the saved
configuration and restores the best or the last weights; nothing else is needed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd

from dltk_mm.errors import ConfigurationError
from dltk_mm.networks.multistream import MultiStreamModel
from dltk_mm.training.checkpointing import (
    best_weights_prefix,
    checkpoint_step,
    latest_checkpoint,
    read_best,
    restore_weights,
)
from dltk_mm.training.config import TrainConfig
from dltk_mm.training.model_dir import CONFIG_FILE, SPLIT_FILE

WEIGHT_CHOICES = ("auto", "best", "last")


@dataclasses.dataclass
class LoadedModel:
    """A trained network and where it came from.

    Attributes:
        model: the network with restored weights (batch norm uses its moving statistics when
            called with ``training=False``).
        config: the run's configuration.
        model_dir: the model folder.
        weights: ``"best"`` or ``"last"``.
        weights_path: the restored checkpoint prefix.
        step: the training step of those weights.
    """

    model: MultiStreamModel
    config: TrainConfig
    model_dir: Path
    weights: str
    weights_path: str
    step: int


def load_config(model_dir: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` saved in ``model_dir/config.json``.

    Raises:
        ConfigurationError: when the folder has no readable configuration.
    """
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigurationError(
            f"{model_dir}: no {CONFIG_FILE}; give the --model_dir of a dltk-mm-train run"
        )
    return TrainConfig.load(path)


def read_split(model_dir: str | os.PathLike) -> pd.DataFrame:
    """The run's ``split.csv`` (subject_id, modality, fold, role = train / validation / test).

    Raises:
        ConfigurationError: when the file is missing.
    """
    path = Path(model_dir) / SPLIT_FILE
    if not path.is_file():
        raise ConfigurationError(f"{model_dir}: no {SPLIT_FILE}; was training started there?")
    return pd.read_csv(path, dtype={"subject_id": str, "modality": str})


def load_trained_model(model_dir: str | os.PathLike, weights: str = "auto") -> LoadedModel:
    """Rebuilds the network of a model folder and restores its weights.

    Args:
        model_dir: folder written by :func:`dltk_mm.training.train` / ``dltk-mm-train``.
        weights: ``"best"`` (best mean validation Dice), ``"last"`` (newest checkpoint) or
            ``"auto"`` (best if the run validated, else last).

    Returns:
        A :class:`LoadedModel`.

    Raises:
        ConfigurationError: unknown ``weights``, missing configuration or weights, or weights
            that do not fit the configuration.
    """
    if weights not in WEIGHT_CHOICES:
        raise ConfigurationError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    model_dir = Path(model_dir)
    config = load_config(model_dir)
    best_prefix = best_weights_prefix(model_dir)
    if weights == "best" and best_prefix is None:
        raise ConfigurationError(
            f"{model_dir}: no best weights (the run did not validate yet, or used fold -1); "
            "use the last checkpoint instead (weights='last', --weights=last)"
        )
    if weights == "best" or (weights == "auto" and best_prefix is not None):
        which, prefix = "best", best_prefix
        step = int((read_best(model_dir) or {}).get("step", -1))
    else:
        which, prefix = "last", latest_checkpoint(model_dir)
        if prefix is None:
            raise ConfigurationError(
                f"{model_dir}: no checkpoint yet; train first (dltk-mm-train --model_dir="
                f"{model_dir} ...)"
            )
        step = checkpoint_step(prefix)
    model = config.build_model()
    restore_weights(prefix, model)
    return LoadedModel(model=model, config=config, model_dir=model_dir, weights=which,
                       weights_path=prefix, step=step)
