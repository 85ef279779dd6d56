"""dltk_mm.training: configuration, folds, checkpoints and the training loop (``train``)."""

from dltk_mm.training.callbacks import (
    HistoryWriter,
    StopOnSignal,
    TensorBoardWriter,
    TrainingCallback,
)
from dltk_mm.training.checkpointing import (
    TrainingCheckpoint,
    latest_checkpoint,
    read_best,
    restore_checkpoint,
    restore_weights,
)
from dltk_mm.training.config import RESUMABLE_FIELDS, NetworkConfig, TrainConfig
from dltk_mm.training.folds import assign_folds, split_manifest
from dltk_mm.training.loading import LoadedModel, load_config, load_trained_model, read_split
from dltk_mm.training.model_dir import FolderLock, prepare_model_dir
from dltk_mm.training.results import TrainingInfo, TrainResult, ValidationResult
from dltk_mm.training.trainer import train
from dltk_mm.training.validation import validate

__all__ = [
    "RESUMABLE_FIELDS",
    "FolderLock",
    "HistoryWriter",
    "LoadedModel",
    "NetworkConfig",
    "StopOnSignal",
    "TensorBoardWriter",
    "TrainConfig",
    "TrainResult",
    "TrainingCallback",
    "TrainingCheckpoint",
    "TrainingInfo",
    "ValidationResult",
    "assign_folds",
    "latest_checkpoint",
    "load_config",
    "load_trained_model",
    "prepare_model_dir",
    "read_best",
    "read_split",
    "restore_checkpoint",
    "restore_weights",
    "split_manifest",
    "train",
    "validate",
]
