"""The complete configuration of a training run, saved as ``<model_dir>/config.json``.

:class:`TrainConfig` holds everything a run depends on - data (manifest, modalities, fold split,
preprocessing), network, input pipeline, optimiser, loss, schedule, validation inference and
seeds - so that prediction and export need nothing but the model folder. Its defaults are the
paper's, held here once (docs/paper.md, sections 4-6): 2 mm preprocessing, 2-fold
cross-validation, batches of 16 class-balanced 64^3 patches with noise and offset augmentation,
Adam (beta1 0.9, beta2 0.999, epsilon 1e-5) with the scheme's constant learning rate, soft Dice
loss, 10k steps, validation with 50 % window overlap. Named recipes beyond the paper
(:mod:`dltk_mm.training.recipes`) are layered over these defaults. Every field is also a
command-line flag, derived from the field (:mod:`dltk_mm.training.config_flags`); the
``Attributes`` below are the flags' help.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dltk_mm import flag_fields
from dltk_mm.core.losses import get_loss
from dltk_mm.errors import ConfigurationError
from dltk_mm.inference.segment import InferenceConfig
from dltk_mm.io.augmentation import AugmentationConfig
from dltk_mm.io.files import atomic_write_text
from dltk_mm.io.pipeline import PipelineConfig
from dltk_mm.io.preprocessing import PreprocessingConfig
from dltk_mm.networks.schemes import default_learning_rate, get_scheme
from dltk_mm.training.distribute import STRATEGIES
from dltk_mm.training.recipes import PAPER, check_recipe

if TYPE_CHECKING:
    from dltk_mm.networks.multistream import MultiStreamModel

#: Values accepted for :attr:`TrainConfig.strategy` (see :mod:`dltk_mm.training.distribute`).
SUPPORTED_STRATEGIES = STRATEGIES

#: Fields that may differ between a run and its resumption: they change the schedule, logging or
#: speed, not the model, the data or the optimisation. Every other difference is refused.
RESUMABLE_FIELDS = frozenset(
    {
        "steps",
        "validation_interval",
        "inference.batch_size",
        "checkpoint_interval",
        "keep_checkpoints",
        "log_interval",
        "jit_compile",
        "strategy",
        "cache_dir",
        "checkpoint_input_pipeline",
        "pipeline.num_parallel_calls",
        "pipeline.prefetch",
    }
)


#: Values of :attr:`NetworkConfig.strided_kernel`, :attr:`~NetworkConfig.upscore_kernel` and
#: :attr:`~NetworkConfig.upsample_border`.
STRIDED_KERNELS = ("paper", "code")
UPSCORE_KERNELS = ("paper", "code")
UPSAMPLE_BORDERS = ("replicate", "zero")

#: Values of :attr:`TrainConfig.lr_schedule` (see :mod:`dltk_mm.training.schedules`).
LR_SCHEDULES = ("constant", "poly", "cosine")

#: Keys of config.json files written before validation used an :class:`InferenceConfig`: old key
#: -> field of :attr:`TrainConfig.inference`.
_LEGACY_INFERENCE_KEYS = {"validation_overlap": "overlap", "validation_batch_size": "batch_size"}


def _tuples(value: Any) -> Any:
    """Lists (from JSON) -> tuples, recursively."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _lists(value: Any) -> Any:
    """Tuples -> lists, recursively (JSON form)."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _lists(v) for k, v in value.items()}
    return value


def _check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown option(s) {unknown}; known options are {sorted(names)}"
        )


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Arguments of :func:`dltk_mm.networks.build_multistream` besides scheme and modalities.

    Attributes:
        num_classes: classes including background (5: background, liver, spleen, right and left
            kidney).
        filters: stem and residual-scale channels at width 1 (paper: 16, 64, 128, 256, 512).
        strides: stem and residual-scale strides (paper: 1, 2, 2, 2, 1); an entry may be a
            (z, y, x) triple.
        num_res_units: residual units per scale (3).
        kernel_size: kernel of the stem and residual-unit convolutions (3).
        strided_kernel: ``"paper"`` (kernel twice the stride) or ``"code"`` (kernel = stride).
        upscore_kernel: ``"paper"`` (1^3 reduction conv) or ``"code"`` (3^3).
        upsample_border: ``"replicate"`` (linear interpolation) or ``"zero"`` (the code's
            transposed convolution).
        width: multiplies ``filters`` for smaller networks (1.0 = paper).
        leaky_relu_alpha: leaky ReLU slope (0.01, the code's value).
        batch_norm_momentum: batch-norm momentum (0.99).
        batch_norm_epsilon: batch-norm epsilon (1e-3).
    """

    num_classes: int = 5
    filters: tuple[int, ...] = (16, 64, 128, 256, 512)
    strides: tuple[Any, ...] = (1, 2, 2, 2, 1)
    num_res_units: int = 3
    kernel_size: int | tuple[int, int, int] = 3
    strided_kernel: str = "paper"
    upscore_kernel: str = "paper"
    upsample_border: str = "replicate"
    width: float = 1.0
    leaky_relu_alpha: float = 0.01
    batch_norm_momentum: float = 0.99
    batch_norm_epsilon: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("filters", "strides", "kernel_size"):
            object.__setattr__(self, name, _tuples(getattr(self, name)))
        if len(self.filters) != len(self.strides):
            raise ConfigurationError(
                f"network filters {self.filters} and strides {self.strides} must have the same "
                "length"
            )
        if self.num_res_units < 1:
            raise ConfigurationError(f"num_res_units must be >= 1, got {self.num_res_units}")
        if not self.width > 0:
            raise ConfigurationError(f"network width must be > 0, got {self.width}")
        for name, allowed in (("strided_kernel", STRIDED_KERNELS),
                              ("upscore_kernel", UPSCORE_KERNELS),
                              ("upsample_border", UPSAMPLE_BORDERS)):
            if getattr(self, name) not in allowed:
                raise ConfigurationError(
                    f"network {name} must be one of {allowed}, got {getattr(self, name)!r}")

    def size_factor(self) -> tuple[int, int, int]:
        """Product of the strides per axis (z, y, x): input sizes must be multiples of it."""
        triples = [s if isinstance(s, tuple) else (s, s, s) for s in self.strides]
        return tuple(math.prod(int(t[a]) for t in triples) for a in range(3))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return _lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NetworkConfig:
        """The inverse of :meth:`to_dict` (unknown keys are an error)."""
        _check_keys(cls, data, "network config")
        return cls(**{k: _tuples(v) for k, v in data.items()})


def pipeline_to_dict(config: PipelineConfig) -> dict[str, Any]:
    """JSON-serialisable dict of a :class:`~dltk_mm.io.pipeline.PipelineConfig`."""
    return _lists(dataclasses.asdict(config))


def pipeline_from_dict(data: Mapping[str, Any]) -> PipelineConfig:
    """The inverse of :func:`pipeline_to_dict` (unknown keys are an error)."""
    _check_keys(PipelineConfig, data, "pipeline config")
    values = {k: _tuples(v) for k, v in data.items() if k != "augmentation"}
    augmentation = data.get("augmentation")
    if augmentation is not None:
        if isinstance(augmentation, AugmentationConfig):
            values["augmentation"] = augmentation
        else:
            _check_keys(AugmentationConfig, augmentation, "augmentation config")
            values["augmentation"] = AugmentationConfig(
                **{k: _tuples(v) for k, v in augmentation.items()}
            )
    return PipelineConfig(**values)


def _upgrade_legacy_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with the keys of older config.json files moved to their current fields."""
    data = dict(data)
    legacy = {new: data.pop(old) for old, new in _LEGACY_INFERENCE_KEYS.items() if old in data}
    if not legacy:
        return data
    if "inference" in data:
        raise ConfigurationError(
            f"training config: {sorted(_LEGACY_INFERENCE_KEYS)} and 'inference' are both given; "
            "keep only 'inference'")
    if legacy.get("batch_size") is None:
        pipeline = data.get("pipeline") or {}
        legacy["batch_size"] = pipeline.get("batch_size", PipelineConfig().batch_size)
    data["inference"] = legacy
    if data.get("scheme") == "individual" and "individual_shared_steps" not in data:
        # Written before individual trained each stream apart: resume it as it was trained.
        data["individual_shared_steps"] = True
    return data


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved as ``<model_dir>/config.json``).

    Attributes:
        manifest: manifest CSV of the training data (absolute path recommended; see
            :func:`dltk_mm.io.manifest.load_manifest`).
        scheme: training scheme (individual, joint, v1-v4, msbn; docs/paper.md, section 3).
        modalities: ordered modality names; a batch's modality index is a position here. One
            modality gives a single-modality model.
        order: cycle of batch modalities (default: ``modalities``, i.e. MR, CT, MR, ... as the
            authors' code).
        fold: held-out fold for validation; -1 trains on every subject without validation.
        num_folds: folds of the per-modality split when the manifest has no ``fold`` column
            (paper: 2-fold cross-validation).
        split_seed: seed of that split; independent of ``seed`` so that repetitions with other
            seeds keep the same (fixed) split, as in the paper.
        validation_holdout: subjects of each modality taken out of the training rows (seeded by
            ``split_seed``) to validate on and choose the best weights by, so that the held-out
            fold stays a test set the run never sees; 0 (default, as the paper's code): validate
            on the held-out fold.
        network: network options, see :class:`NetworkConfig`.
        preprocessing: preprocessing options (spacing, crop, normalisation, label preset).
        cache_dir: preprocessing cache folder; None = ``<manifest folder>/.dltk_mm_cache`` if
            writable, else ``<model_dir>/cache``.
        pipeline: patch size, batch size, sampling and augmentation; its ``seed`` must stay None
            (the pipeline seed is derived from :attr:`seed`).
        learning_rate: Adam learning rate; None = the scheme's paper value
            (``Scheme.learning_rate`` in :mod:`dltk_mm.networks.schemes`).
        lr_schedule: learning rate over the run: ``"constant"`` (paper), ``"poly"`` (decays as
            (1 - progress) ** 0.9 to 0 at the last step) or ``"cosine"`` (half a cosine to 0).
        warmup_steps: raise the learning rate linearly over the first this many steps (0: none,
            as in the paper); a warm-up as long as the run never reaches the full rate.
        adam_beta_1: Adam beta1 (0.9).
        adam_beta_2: Adam beta2 (0.999).
        adam_epsilon: Adam epsilon (1e-5, the authors' value).
        loss: ``"dice"`` (paper), ``"cross_entropy"`` or ``"dice_cross_entropy"``.
        steps: optimiser steps in total (paper: 10000).
        seed: seed of the weight initialisation and the input pipeline.
        validation_interval: validate (sliding-window Dice on the held-out fold) every this many
            steps and at the end.
        inference: how validation segments the held-out volumes (sliding-window overlap 0.5 as
            the code, blending, windows per forward pass, mirroring, post-processing); see
            InferenceConfig.
        checkpoint_interval: save a checkpoint every this many steps (and at the end, and on
            SIGINT/SIGTERM).
        keep_checkpoints: how many recent checkpoints to keep.
        log_interval: write the mean training losses (history.csv, TensorBoard) every this many
            steps.
        checkpoint_input_pipeline: save the input pipeline's position with each checkpoint so that
            a resumed run sees exactly the batches an uninterrupted one would (the checkpoint then
            holds the pipeline's buffers); False reseeds the pipeline on resume instead.
        jit_compile: XLA-compile the training step and the validation forward pass.
        deterministic: enable TensorFlow op determinism (with the seeds, runs are repeatable).
        strategy: ``"default"`` (one device), ``"mirrored"`` (all local GPUs) or
            ``"multi_worker"`` (several processes/machines, cluster from ``TF_CONFIG``); see
            :mod:`dltk_mm.training.distribute` and docs/distributed.md. ``pipeline.batch_size`` is
            the global batch (split over the replicas). May change when resuming.
        mixed_precision: ``mixed_float16`` compute with dynamic loss scaling
            (``keras.optimizers.LossScaleOptimizer``); variables, logits, loss and batch-norm
            statistics stay float32. Measured slower on CPU (see experiments/bench/README.md);
            use it on GPUs with tensor cores.
        ignore_other_modalities: leave out (and count in the log) the manifest rows whose
            modality is not in ``modalities``; False refuses such rows, listing them.
        individual_shared_steps: individual only: the pre-issue-12 schedule: both streams share one
            Adam and one ``steps`` budget (alternating batches, so each stream gets about steps /
            number of modalities updates). Default False: each stream gets ``steps`` updates of
            its own modality with its own Adam (the paper; docs/paper.md, section 4).
        recipe: the named recipe the settings were layered on (``"paper"`` or ``"plus"``, see
            :mod:`dltk_mm.training.recipes`); recorded in config.json, the other fields hold the
            settings used.
    """

    manifest: str
    scheme: str
    modalities: tuple[str, ...] = ("mr", "ct")
    order: tuple[str, ...] | None = None
    fold: int = 0
    num_folds: int = 2
    split_seed: int = 0
    validation_holdout: int = 0
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    preprocessing: PreprocessingConfig = dataclasses.field(default_factory=PreprocessingConfig)
    cache_dir: str | None = None
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    learning_rate: float | None = None
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.999
    adam_epsilon: float = 1e-5
    loss: str = "dice"
    steps: int = 10000
    seed: int = 0
    validation_interval: int = 500
    inference: InferenceConfig = dataclasses.field(default_factory=InferenceConfig)
    checkpoint_interval: int = 500
    keep_checkpoints: int = 3
    log_interval: int = 50
    checkpoint_input_pipeline: bool = True
    jit_compile: bool = False
    deterministic: bool = False
    strategy: str = "default"
    mixed_precision: bool = False
    ignore_other_modalities: bool = False
    individual_shared_steps: bool = False
    recipe: str = PAPER

    def __post_init__(self) -> None:
        if self.manifest is None:
            raise ConfigurationError("manifest is required: the manifest CSV of the training data")
        object.__setattr__(self, "manifest", os.fspath(self.manifest))
        object.__setattr__(self, "scheme", get_scheme(self.scheme).name)
        if isinstance(self.modalities, str):
            raise ConfigurationError(
                f"modalities must be a sequence such as ('mr', 'ct'), got {self.modalities!r}"
            )
        modalities = tuple(str(m).strip().lower() for m in self.modalities)
        if not modalities or len(set(modalities)) != len(modalities):
            raise ConfigurationError(f"modalities must be distinct and non-empty, got {modalities}")
        object.__setattr__(self, "modalities", modalities)
        if self.order is not None:
            order = tuple(str(m).strip().lower() for m in self.order)
            unknown = [m for m in order if m not in modalities]
            if not order or unknown:
                raise ConfigurationError(
                    f"order {order} must be a non-empty cycle of the modalities {modalities}"
                )
            object.__setattr__(self, "order", order)
        self._check_individual()
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", os.fspath(self.cache_dir))
        if self.num_folds < 2:
            raise ConfigurationError(f"num_folds must be >= 2, got {self.num_folds}")
        if self.fold < -1:
            raise ConfigurationError(
                f"fold must be -1 (train on everything) or a fold number >= 0, got {self.fold}"
            )
        if self.validation_holdout < 0:
            raise ConfigurationError(
                f"validation_holdout must be >= 0 subjects per modality, got "
                f"{self.validation_holdout}")
        self._check_parts()
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigurationError(f"learning_rate must be > 0, got {self.learning_rate}")
        get_loss(self.loss)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigurationError(f"unknown lr_schedule {self.lr_schedule!r}; use one of "
                                     f"{list(LR_SCHEDULES)}")
        if self.warmup_steps < 0:
            raise ConfigurationError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check_recipe(self.recipe)
        if self.steps < 1:
            raise ConfigurationError(f"steps must be >= 1, got {self.steps}")
        for name in ("validation_interval", "checkpoint_interval", "keep_checkpoints",
                     "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.strategy not in SUPPORTED_STRATEGIES:
            raise ConfigurationError(
                f"unknown strategy {self.strategy!r}; use one of {list(SUPPORTED_STRATEGIES)}"
            )

    def _check_individual(self) -> None:
        """What scheme individual (each stream trained once per step) needs."""
        if self.individual_shared_steps and self.scheme != "individual":
            raise ConfigurationError("individual_shared_steps applies only to scheme 'individual' "
                                     f"(got scheme {self.scheme})")
        order = self.order
        if (self.scheme == "individual" and not self.individual_shared_steps
                and order is not None and len(set(order)) != len(order)):
            raise ConfigurationError(
                f"order {order} repeats a modality: scheme individual trains every stream once "
                "per step; give each modality once")

    def _check_parts(self) -> None:
        """The nested configurations: their types, and what must agree between them."""
        for name, kind in (("network", NetworkConfig), ("preprocessing", PreprocessingConfig),
                           ("pipeline", PipelineConfig), ("inference", InferenceConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ConfigurationError(f"{name} must be a {kind.__name__}")
        if self.pipeline.seed is not None:
            raise ConfigurationError(
                "leave pipeline.seed unset: the input pipeline's seed is derived from "
                "TrainConfig.seed"
            )
        if self.pipeline.num_classes != self.network.num_classes:
            raise ConfigurationError(
                f"pipeline.num_classes ({self.pipeline.num_classes}) must equal "
                f"network.num_classes ({self.network.num_classes})"
            )
        factor = self.network.size_factor()
        if any(p % f for p, f in zip(self.pipeline.patch_size, factor, strict=True)):
            raise ConfigurationError(
                f"patch size {self.pipeline.patch_size} must be divisible by the product of the "
                f"network's strides {factor} along each axis, e.g. 64 or 32"
            )

    # ---------------------------------------------------------------------------------------
    @property
    def effective_learning_rate(self) -> float:
        """The learning rate used: :attr:`learning_rate` or the scheme's paper default."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return default_learning_rate(self.scheme)

    @property
    def effective_order(self) -> tuple[str, ...]:
        """The batch modality cycle used: :attr:`order` or :attr:`modalities`."""
        return self.order if self.order is not None else self.modalities

    @property
    def validates(self) -> bool:
        """Whether this run validates: on a held-out fold (``fold >= 0``) or on subjects taken
        out of its training rows (``validation_holdout > 0``)."""
        return self.fold >= 0 or self.validation_holdout > 0

    def build_model(self, dtype_policy: str | None = None) -> MultiStreamModel:
        """A freshly initialised network of this configuration (not compiled).

        Args:
            dtype_policy: Keras dtype policy of the layers (``"mixed_float16"`` for
                mixed-precision training); None = float32 (the global default).
        """
        from dltk_mm.networks.multistream import build_multistream  # TensorFlow

        network = self.network.to_dict()
        return build_multistream(self.scheme, modalities=self.modalities,
                                 dtype_policy=dtype_policy, **_tuples(network))

    # ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable nested dict."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["network"] = self.network.to_dict()
        data["preprocessing"] = self.preprocessing.to_dict()
        data["pipeline"] = pipeline_to_dict(self.pipeline)
        data["inference"] = self.inference.to_dict()
        return _lists(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict` (unknown keys are an error).

        Files written before validation took an :class:`InferenceConfig` load too: their
        ``validation_overlap`` and ``validation_batch_size`` become ``inference.overlap`` and
        ``inference.batch_size`` (a batch size of None, "the training batch size", becomes that
        number), and such an ``individual`` run keeps the schedule it was trained with
        (``individual_shared_steps``).
        """
        data = _upgrade_legacy_keys(data)
        _check_keys(cls, data, "training config")
        nested = ("network", "preprocessing", "pipeline", "inference")
        values = {k: _tuples(v) for k, v in data.items() if k not in nested}
        if "network" in data:
            values["network"] = NetworkConfig.from_dict(data["network"])
        if "preprocessing" in data:
            values["preprocessing"] = PreprocessingConfig.from_dict(dict(data["preprocessing"]))
        if "pipeline" in data:
            values["pipeline"] = pipeline_from_dict(data["pipeline"])
        if "inference" in data:
            values["inference"] = InferenceConfig.from_dict(data["inference"])
        return cls(**values)

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainConfig:
        """A copy with the given fields changed, validated again.

        Args:
            overrides: dotted field name -> value, e.g. ``{"network.width": 0.25,
                "pipeline.patch_size": (32, 32, 32), "steps": 3000}``; a nested configuration
                may also be given whole (``{"inference": InferenceConfig(mirror=True)}``).

        Raises:
            ConfigurationError: for an unknown field (naming the known ones) or an invalid
                result.
        """
        return flag_fields.replace(self, overrides)

    def to_json(self) -> str:
        """Indented JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """The inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> Path:
        """Writes :meth:`to_json` to ``path`` atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """Reads a config written by :meth:`save`.

        Raises:
            ConfigurationError: when the file is missing, unreadable or holds unknown options.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigurationError(
                f"{path}: cannot read the training configuration ({error}); is this a model "
                "folder written by dltk-mm-train?"
            ) from error
        try:
            return cls.from_json(text)
        except (ValueError, TypeError) as error:
            raise ConfigurationError(f"{path}: invalid training configuration: {error}") from error

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Options that differ: ``{"pipeline.batch_size": (self_value, other_value), ...}``."""
        mine = _flatten(self.to_dict())
        theirs = _flatten(other.to_dict())
        return {
            key: (mine.get(key), theirs.get(key))
            for key in sorted(set(mine) | set(theirs))
            if mine.get(key) != theirs.get(key)
        }

    def incompatible_differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """:meth:`differences` that forbid resuming one run with the other configuration.

        ``steps`` may change unless a learning-rate schedule depends on it (``lr_schedule``
        other than constant, in either configuration).
        """
        scheduled = self.lr_schedule != "constant" or other.lr_schedule != "constant"
        resumable = RESUMABLE_FIELDS - {"steps"} if scheduled else RESUMABLE_FIELDS
        return {
            key: value
            for key, value in self.differences(other).items()
            if key not in resumable
        }
