"""Multi-stream networks for unpaired multi-modal learning (Valindria et al., WACV 2018).

:func:`build_multistream` wires one functional FCN stream per modality from a shared
:class:`~dltk_mm.networks.fcn.LayerRegistry`, so that the blocks a scheme shares are literally the
same layers in every stream. :class:`MultiStreamModel` routes each batch (all of one modality, which
carries its modality index) to its stream inside the compiled graph with ``tf.switch_case``,
computes that stream's loss and updates only the variables that stream uses (docs/paper.md,
sections 3.2 and 4.4):
after a step on an MR batch, every CT-only weight and CT-only batch-norm statistic is unchanged.
Streams that share no layer (``individual``) may be compiled with one optimizer each
(:meth:`MultiStreamModel.compile`), so that every stream is optimised as if trained alone.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from dltk_mm.core.losses import LossFunction, get_loss
from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.networks.fcn import LayerRegistry, block_names, build_stream, normalise_strides
from dltk_mm.networks.schemes import BLOCK_NAMES, Scheme, default_learning_rate, get_scheme

_MODALITY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def make_optimizer(
    scheme_or_learning_rate: str | float = "joint",
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-5,
    loss_scale: bool = False,
) -> keras.optimizers.Optimizer:
    """Adam as in the paper (docs/paper.md, section 4.4).

    Args:
        scheme_or_learning_rate: a scheme name (its default learning rate: 1e-3 for individual and
            joint, 1e-4 for the dual-stream schemes) or a learning rate (or schedule).
        beta_1: Adam beta1 (0.9).
        beta_2: Adam beta2 (0.999).
        epsilon: Adam epsilon (1e-5, the authors' value; Keras' default is 1e-7).
        loss_scale: wrap it in a dynamic ``keras.optimizers.LossScaleOptimizer`` (for
            ``mixed_float16`` training).

    Returns:
        A new ``keras.optimizers.Adam`` (or a ``LossScaleOptimizer`` around one).
    """
    if isinstance(scheme_or_learning_rate, str):
        learning_rate = default_learning_rate(scheme_or_learning_rate)
    else:
        learning_rate = scheme_or_learning_rate
    adam = keras.optimizers.Adam(
        learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon
    )
    return keras.optimizers.LossScaleOptimizer(adam) if loss_scale else adam


def _validate_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    if isinstance(modalities, str) or not isinstance(modalities, Sequence):
        raise ConfigurationError(
            f"modalities must be a sequence of names like ('mr', 'ct'), got {modalities!r}"
        )
    modalities = tuple(modalities)
    if not modalities:
        raise ConfigurationError("modalities must name at least one modality, e.g. ('mr', 'ct')")
    for m in modalities:
        if not isinstance(m, str) or not _MODALITY_PATTERN.match(m):
            raise ConfigurationError(
                f"modality {m!r} is not a lower-case name ([a-z][a-z0-9_]*), e.g. 'ct' or 'mr_t1'"
            )
    if len(set(modalities)) != len(modalities):
        raise ConfigurationError(f"modalities must be unique, got {modalities}")
    return modalities


def _check_layout(scheme: Scheme, filters: Sequence[int], strides: Sequence[Any],
                  num_classes: int, width: float) -> None:
    """Refuses scales, class counts and widths the network cannot be built with."""
    if len(filters) != len(strides):
        raise ConfigurationError(
            f"filters {tuple(filters)} and strides {tuple(strides)} must have the same length"
        )
    if scheme.specific_blocks and block_names(len(filters)) != BLOCK_NAMES:
        raise ConfigurationError(
            f"scheme {scheme.name!r} is defined on the 5-scale FCN (blocks {BLOCK_NAMES}); "
            f"got {len(filters)} scales. Use 5 entries in filters and strides."
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigurationError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not width > 0:
        raise ConfigurationError(f"width must be > 0, got {width!r}")


def build_multistream(
    scheme: str,
    modalities: Sequence[str] = ("mr", "ct"),
    num_classes: int = 5,
    filters: Sequence[int] = (16, 64, 128, 256, 512),
    strides: Sequence[int | Sequence[int]] = (1, 2, 2, 2, 1),
    num_res_units: int = 3,
    kernel_size: int | Sequence[int] = 3,
    strided_kernel: str = "paper",
    upscore_kernel: str = "paper",
    upsample_border: str = "replicate",
    width: float = 1.0,
    leaky_relu_alpha: float = 0.01,
    batch_norm_momentum: float = 0.99,
    batch_norm_epsilon: float = 1e-3,
    input_shape: Sequence[int] | None = None,
    name: str | None = None,
    dtype_policy: str | None = None,
) -> MultiStreamModel:
    """Builds the multi-stream FCN of a training scheme (Valindria et al. 2018, Fig. 2).

    Args:
        scheme: one of :data:`dltk_mm.networks.SCHEMES` (individual, joint, v1-v4, msbn).
        modalities: ordered modality names; a batch's modality index is a position here
            (default ``("mr", "ct")``, the paper's order).
        num_classes: classes including background (5).
        filters: stem and residual-scale channels at width 1.
        strides: stem and residual-scale strides.
        num_res_units: residual units per scale (3).
        kernel_size: kernel of the stem and residual-unit convolutions (3).
        strided_kernel: ``"paper"`` (4^3 strided convs) or ``"code"`` (2^3).
        upscore_kernel: ``"paper"`` (1^3 reduction conv) or ``"code"`` (3^3).
        upsample_border: ``"replicate"`` (true linear interpolation) or ``"zero"`` (code).
        width: multiplies ``filters`` (rounded, at least 1) for smaller networks.
        leaky_relu_alpha: leaky ReLU slope (0.01).
        batch_norm_momentum: batch-norm momentum (0.99).
        batch_norm_epsilon: batch-norm epsilon (1e-3).
        input_shape: optional fixed spatial size ``(z, y, x)``; each must be divisible by the
            product of the strides along its axis. ``None``: any divisible size.
        name: model name (default ``"multistream_{scheme}"``).
        dtype_policy: Keras dtype policy of the layers, e.g. ``"mixed_float16"`` for
            mixed-precision training; ``None`` = the global policy (float32 by default). Variables
            stay float32 in every policy (checkpoints are interchangeable), the head convolution
            (logits), softmax and batch norm compute in float32. Not part of :attr:`build_config`:
            a model rebuilt for inference uses float32. See :func:`apply_precision_exceptions`.

    Returns:
        The :class:`MultiStreamModel`.

    Raises:
        ConfigurationError: unknown scheme or option, bad modalities, sizes, widths.
    """
    scheme_obj = get_scheme(scheme)
    modalities = _validate_modalities(modalities)
    stride_triples = normalise_strides(strides)
    _check_layout(scheme_obj, filters, strides, num_classes, width)
    scaled_filters = tuple(max(1, int(round(f * width))) for f in filters)
    factor = tuple(int(np.prod([s[a] for s in stride_triples])) for a in range(3))
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)
        if len(input_shape) != 3 or any(
            d < 1 or d % f for d, f in zip(input_shape, factor, strict=True)
        ):
            raise ConfigurationError(
                f"input_shape {input_shape} must be 3 positive sizes (z, y, x) divisible by the "
                f"product of the strides {factor}"
            )

    build_config = {
        "scheme": scheme_obj.name,
        "modalities": list(modalities),
        "num_classes": num_classes,
        "filters": list(filters),
        "strides": [list(s) for s in stride_triples],
        "num_res_units": num_res_units,
        "kernel_size": kernel_size if isinstance(kernel_size, int) else list(kernel_size),
        "strided_kernel": strided_kernel,
        "upscore_kernel": upscore_kernel,
        "upsample_border": upsample_border,
        "width": width,
        "leaky_relu_alpha": leaky_relu_alpha,
        "batch_norm_momentum": batch_norm_momentum,
        "batch_norm_epsilon": batch_norm_epsilon,
        "input_shape": None if input_shape is None else list(input_shape),
        "name": name,
    }
    registry = LayerRegistry(scheme_obj, modalities=modalities)
    previous_policy = keras.config.dtype_policy()
    if dtype_policy is not None:
        keras.config.set_dtype_policy(dtype_policy)
    try:
        streams = _build_streams(
            modalities, registry, num_classes=num_classes, filters=scaled_filters,
            strides=stride_triples, num_res_units=num_res_units, kernel_size=kernel_size,
            strided_kernel=strided_kernel, upscore_kernel=upscore_kernel,
            upsample_border=upsample_border, leaky_relu_alpha=leaky_relu_alpha,
            batch_norm_momentum=batch_norm_momentum, batch_norm_epsilon=batch_norm_epsilon,
            input_shape=input_shape or (None, None, None),
        )
    finally:
        keras.config.set_dtype_policy(previous_policy)
    apply_precision_exceptions(streams, registry)
    return MultiStreamModel(
        streams,
        build_config=build_config,
        registry=registry,
        size_factor=factor,
        name=name or f"multistream_{scheme_obj.name}",
    )


def _build_streams(
    modalities: Sequence[str], registry: LayerRegistry, **kwargs: Any
) -> dict[str, keras.Model]:
    return {m: build_stream(m, registry, **kwargs) for m in modalities}


def apply_precision_exceptions(
    streams: Mapping[str, keras.Model], registry: LayerRegistry
) -> None:
    """Keeps numerically sensitive layers in float32 under a mixed policy (no-op in float32).

    The head convolution computes the logits in float32 (so logits, softmax and the loss are
    float32, as the network contract says); Keras already keeps batch-norm statistics in float32.
    When no GPU is visible, max pooling (used by the strided residual shortcuts) runs in float32
    too, because TensorFlow has no float16 ``MaxPool3D`` CPU kernel.

    Args:
        streams: modality -> functional stream model.
        registry: the registry that built them (to find the head layers).
    """
    float32 = keras.DTypePolicy("float32")
    for key, layer in registry.layers.items():
        if key[0] == "head" and layer.dtype_policy.compute_dtype != "float32":
            layer.dtype_policy = float32
    if tf.config.list_physical_devices("GPU"):
        return
    for stream in streams.values():
        for layer in stream.layers:
            if (isinstance(layer, keras.layers.MaxPooling3D)
                    and layer.dtype_policy.compute_dtype == "float16"):
                layer.dtype_policy = float32


@keras.saving.register_keras_serializable(package="dltk_mm")
class MultiStreamModel(keras.Model):
    """Several modality streams sharing layers, trained with a routed step.

    Build it with :func:`build_multistream`. ``model((image, modality_index))`` runs the stream of
    ``modalities[modality_index]``; ``model.fit`` expects a dataset of ``(image, label,
    modality_index)`` batches, one modality per batch.

    TensorFlow's object-based checkpoints see the streams: ``tf.train.Checkpoint(model=model)``
    saves and restores every variable of every stream, batch-norm moving statistics included
    (dependency ``streams``, the same as in dltk_mm's own files, which store only
    :attr:`checkpoint_state`), so a trained model folder's ``best/model`` or
    ``checkpoints/ckpt-<step>`` can be read into a model with
    ``tf.train.Checkpoint(model=model).read(prefix).expect_partial()``.

    Attributes:
        streams: modality -> functional ``keras.Model`` (shared layers are the same objects).
        modalities: the ordered modality names.
        scheme: the scheme name.
        num_classes: number of classes.
        registry: the :class:`LayerRegistry` that wired the streams.
    """

    def __init__(
        self,
        streams: Mapping[str, keras.Model],
        build_config: Mapping[str, Any],
        registry: LayerRegistry | None = None,
        size_factor: Sequence[int] = (1, 1, 1),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.streams = dict(streams)
        # Keras keeps `streams` in its own tracked dict, which TensorFlow's checkpoints do not
        # traverse; this module holds the same models for them (see _trackable_children).
        holder = tf.Module(name="model_state")
        holder.streams = {name: self.streams[name] for name in sorted(self.streams)}
        self._checkpoint_state = holder
        self.modalities = tuple(build_config["modalities"])
        self.scheme = str(build_config["scheme"])
        self.num_classes = int(build_config["num_classes"])
        self.registry = registry
        self._size_factor = tuple(size_factor)
        self._build_config_json = json.dumps(dict(build_config))
        self._stream_optimizers: dict[str, keras.optimizers.Optimizer] | None = None
        self._loss_function: LossFunction = get_loss("dice")
        self._loss_name: str | None = "dice"
        self._loss_tracker_total = keras.metrics.Mean(name="loss")
        self._modality_loss_trackers = [
            keras.metrics.Mean(name=f"loss_{m}") for m in self.modalities
        ]
        self.built = True

    # ----------------------------------------------------------------------------------------
    # Configuration
    @property
    def build_config(self) -> dict[str, Any]:
        """Arguments of :func:`build_multistream` that rebuild this model (JSON-serialisable)."""
        return json.loads(self._build_config_json)

    @property
    def size_factor(self) -> tuple[int, int, int]:
        """Product of the strides per axis (z, y, x): input sizes must be multiples of it."""
        return self._size_factor

    def get_config(self) -> dict[str, Any]:
        return self.build_config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MultiStreamModel:
        return build_multistream(**config)

    @property
    def checkpoint_state(self) -> tf.Module:
        """The streams as a ``tf.Module`` (child ``streams``: modality -> stream), every variable
        of the network and nothing else (no optimizer, no metrics): what dltk_mm's checkpoints
        store as ``model`` (:mod:`dltk_mm.training.checkpointing`)."""
        return self._checkpoint_state

    def _trackable_children(self, save_type: str = "checkpoint", **kwargs: Any) -> dict[str, Any]:
        """TensorFlow's checkpoint dependencies: Keras' own plus ``streams`` (see the class)."""
        children = dict(super()._trackable_children(save_type, **kwargs))
        children.pop("_checkpoint_state", None)
        if save_type == "checkpoint":
            children["streams"] = self._checkpoint_state.streams
        return children

    def modality_index(self, modality: str) -> int:
        """Position of ``modality`` in :attr:`modalities`."""
        if modality not in self.modalities:
            raise ConfigurationError(
                f"unknown modality {modality!r}: this model has streams for {self.modalities}"
            )
        return self.modalities.index(modality)

    def stream_variables(self, modality: str) -> list[keras.Variable]:
        """Trainable variables used by the stream of ``modality`` (shared ones included)."""
        stream = self.streams[self.modalities[self.modality_index(modality)]]
        return list(stream.trainable_variables)

    # ----------------------------------------------------------------------------------------
    # Routing
    def _check_image(self, image: tf.Tensor) -> tf.Tensor:
        image = tf.convert_to_tensor(image)
        if image.shape.rank != 5 or image.shape[-1] != 1:
            raise InputDataError(
                f"images must be (batch, z, y, x, 1), got shape {tuple(image.shape)}"
            )
        for size, factor in zip(image.shape[1:4], self._size_factor, strict=True):
            if size is not None and size % factor:
                raise InputDataError(
                    f"image spatial size {tuple(image.shape[1:4])} is not divisible by the "
                    f"product of the network's strides {self._size_factor}: pad or crop it"
                )
        return image

    def _batch_modality(self, modality_index: tf.Tensor) -> tf.Tensor:
        """The batch's single modality index as an int32 scalar (checked in the graph)."""
        index = tf.reshape(tf.cast(modality_index, tf.int32), [-1])
        first = index[0]
        tf.debugging.assert_equal(
            index, first, message="a batch must hold patches of a single modality"
        )
        tf.debugging.assert_less(first, len(self.modalities), message="modality index out of range")
        tf.debugging.assert_non_negative(first, message="modality index out of range")
        return first

    def _route(self, index: tf.Tensor, branch: Any) -> Any:
        if len(self.modalities) == 1:
            return branch(0)
        return tf.switch_case(
            index, [functools.partial(branch, i) for i in range(len(self.modalities))]
        )

    def call(self, inputs: Any, training: bool | None = None) -> dict[str, tf.Tensor]:
        """Runs the stream selected by the batch's modality index.

        Args:
            inputs: ``(image, modality_index)``; ``image`` is ``(b, z, y, x, 1)``, the index an
                int scalar or a ``(b,)`` vector with equal entries.
            training: batch-norm mode.

        Returns:
            ``{"logits", "probabilities", "prediction"}`` of that stream.
        """
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise InputDataError(
                "MultiStreamModel expects inputs (image, modality_index); to run one modality "
                "use model.streams[modality](image) or model.predict_modality(image, modality)"
            )
        image = self._check_image(inputs[0])
        index = self._batch_modality(inputs[1])

        def branch(i: int) -> dict[str, tf.Tensor]:
            return dict(self.streams[self.modalities[i]](image, training=training))

        return self._route(index, branch)

    def predict_modality(
        self, images: np.ndarray | tf.Tensor, modality: str, batch_size: int = 1
    ) -> dict[str, np.ndarray]:
        """Inference of one modality's stream (batch-norm in inference mode).

        Args:
            images: ``(b, z, y, x, 1)`` float32.
            modality: which stream.
            batch_size: images per forward pass.

        Returns:
            ``{"logits", "probabilities", "prediction"}`` as NumPy arrays.
        """
        stream = self.streams[self.modalities[self.modality_index(modality)]]
        self._check_image(images)
        return stream.predict(images, batch_size=batch_size, verbose=0)

    # ----------------------------------------------------------------------------------------
    # Training
    def compile(
        self,
        optimizer: keras.optimizers.Optimizer | Mapping[str, keras.optimizers.Optimizer] | str
        | None = None,
        loss: str | LossFunction = "dice",
        metrics: Any = None,
        jit_compile: bool | str = False,
        **kwargs: Any,
    ) -> None:
        """Configures the routed training.

        Args:
            optimizer: default :func:`make_optimizer` with the scheme's learning rate. A mapping
                modality -> optimizer (one per modality, distinct objects) gives every stream its
                own optimizer, built on that stream's variables only, so that its iteration count
                and moments are those of the stream trained alone; only for models whose streams
                share no variable (``individual``). :attr:`optimizer` is then the first
                modality's.
            loss: ``"dice"`` (default, the paper), ``"cross_entropy"``, ``"dice_cross_entropy"``
                or a function ``(labels, logits) -> scalar``.
            metrics: not supported (the step tracks ``loss`` and ``loss_{modality}``); evaluate
                segmentations with :mod:`dltk_mm.core.metrics`.
            jit_compile: XLA-compile the step (default False).
            **kwargs: passed to ``keras.Model.compile`` (``steps_per_execution``, ...).
        """
        if metrics:
            raise ConfigurationError(
                "MultiStreamModel.compile does not take metrics: it logs 'loss' and one "
                "'loss_<modality>' per stream; compute Dice etc. on predictions instead"
            )
        self._loss_function = get_loss(loss)
        self._loss_name = loss if isinstance(loss, str) else None
        self._stream_optimizers = None
        if optimizer is None:
            optimizer = make_optimizer(self.scheme)
        if isinstance(optimizer, Mapping):
            self._stream_optimizers = self._build_stream_optimizers(optimizer)
            optimizer = self._stream_optimizers[self.modalities[0]]
        super().compile(optimizer=optimizer, loss=None, jit_compile=jit_compile, **kwargs)
        # Build the optimizer state for all variables up front; each routed step then applies
        # the gradients of one stream's subset.
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def _build_stream_optimizers(
        self, optimizers: Mapping[str, keras.optimizers.Optimizer]
    ) -> dict[str, keras.optimizers.Optimizer]:
        """Checks one optimizer per modality for streams sharing nothing and builds each."""
        if sorted(optimizers) != sorted(self.modalities):
            raise ConfigurationError(
                f"one optimizer per modality is needed, for {self.modalities}; got "
                f"{sorted(optimizers)}"
            )
        if len({id(o) for o in optimizers.values()}) != len(optimizers):
            raise ConfigurationError("each stream needs an optimizer object of its own")
        owners: dict[int, str] = {}
        for modality in self.modalities:
            for variable in self.stream_variables(modality):
                if owners.setdefault(id(variable), modality) != modality:
                    raise ConfigurationError(
                        f"scheme {self.scheme!r}: the {owners[id(variable)]} and {modality} "
                        f"streams share {variable.path}, so they cannot have optimizers of their "
                        "own; give one optimizer (only 'individual' shares nothing)"
                    )
        built = {m: optimizers[m] for m in self.modalities}
        for modality, stream_optimizer in built.items():
            if not stream_optimizer.built:
                stream_optimizer.build(self.stream_variables(modality))
        return built

    @property
    def stream_optimizers(self) -> dict[str, keras.optimizers.Optimizer] | None:
        """Modality -> that stream's own optimizer, or None when all share :attr:`optimizer`."""
        return None if self._stream_optimizers is None else dict(self._stream_optimizers)

    def optimizer_for(self, index: int) -> keras.optimizers.Optimizer:
        """The optimizer that updates the stream of modality index ``index`` (a Python int)."""
        if self._stream_optimizers is None:
            return self.optimizer
        return self._stream_optimizers[self.modalities[index]]

    def get_compile_config(self) -> dict[str, Any] | None:
        """Optimizer(s) and loss name, so that a saved ``.keras`` model is compiled on loading."""
        if not self.compiled:
            return None
        config = {
            "optimizer": keras.optimizers.serialize(self.optimizer),
            "loss": self._loss_name,
            "jit_compile": bool(self.jit_compile),
        }
        if self._stream_optimizers is not None:
            config["stream_optimizers"] = {
                m: keras.optimizers.serialize(o) for m, o in self._stream_optimizers.items()
            }
        return config

    def compile_from_config(self, config: Mapping[str, Any]) -> None:
        """Re-compiles from :meth:`get_compile_config` (a custom loss function is not saved)."""
        if config.get("loss") is None:
            logging.warning("the saved model used a custom loss function; compiling with 'dice'")
        if config.get("stream_optimizers"):
            optimizer = {m: keras.optimizers.deserialize(o)
                         for m, o in config["stream_optimizers"].items()}
        else:
            optimizer = keras.optimizers.deserialize(config["optimizer"])
        self.compile(
            optimizer=optimizer,
            loss=config.get("loss") or "dice",
            jit_compile=config.get("jit_compile", False),
        )

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self._loss_tracker_total, *self._modality_loss_trackers]

    def _unpack(self, data: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        if not isinstance(data, (tuple, list)) or len(data) != 3:
            raise InputDataError(
                "training/evaluation batches must be (image, label, modality_index) with image "
                "(B, z, y, x, 1), label (B, z, y, x), modality_index (B,)"
            )
        image, label, index = data
        return self._check_image(image), label, self._batch_modality(index)

    def _logs(self) -> dict[str, tf.Tensor]:
        return {m.name: m.result() for m in self.metrics}

    def stream_update(
        self,
        index: int,
        image: tf.Tensor,
        label: tf.Tensor,
        loss_weight: float | tf.Tensor = 1.0,
    ) -> tf.Tensor:
        """Forward, loss and optimizer update of ONE stream (no routing, no metric update).

        The update goes through :meth:`optimizer_for` ``(index)``: the model's optimizer, or the
        stream's own one when compiled with one optimizer per modality.

        The building block of the routed step: :meth:`train_step` calls it inside each
        ``tf.switch_case`` branch; :class:`dltk_mm.training.distribute.DistributedRoutedStep` calls
        it in the replica function of a distribution strategy, with ``loss_weight`` = local batch
        / global batch so that the optimizer's all-reduced (summed) gradients are those of the
        global batch mean. The loss is computed in float32 from float32 logits; under a
        ``keras.optimizers.LossScaleOptimizer`` the loss is scaled before differentiation and the
        optimizer unscales (and skips non-finite steps).

        Args:
            index: the stream's modality index (a Python int).
            image: ``(b, z, y, x, 1)`` images.
            label: ``(b, z, y, x)`` integer labels.
            loss_weight: multiplies the loss before differentiation.

        Returns:
            The weighted loss (float32 scalar), unscaled by any loss scale.
        """
        loss, gradients, variables = self.stream_gradients(index, image, label, loss_weight)
        self.optimizer_for(index).apply(gradients, variables)
        return loss

    def stream_gradients(
        self,
        index: int,
        image: tf.Tensor,
        label: tf.Tensor,
        loss_weight: float | tf.Tensor = 1.0,
    ) -> tuple[tf.Tensor, list[tf.Tensor], list[keras.Variable]]:
        """Forward pass (updating the stream's batch-norm statistics) and gradients of one stream.

        See :meth:`stream_update`; the gradients are those of the loss-scaled loss when the
        optimizer is a ``LossScaleOptimizer`` (its ``apply`` unscales them).

        Returns:
            ``(weighted loss, gradients, the stream's trainable variables)``.
        """
        stream = self.streams[self.modalities[index]]
        variables = stream.trainable_variables
        with tf.GradientTape() as tape:
            logits = tf.cast(stream(image, training=True)["logits"], tf.float32)
            loss = tf.cast(self._loss_function(label, logits), tf.float32) * loss_weight
            scaled = self.optimizer_for(index).scale_loss(loss)
        gradients = tape.gradient(scaled, variables)
        return loss, gradients, variables

    def train_step(self, data: Any) -> dict[str, tf.Tensor]:
        """One routed step: forward, loss and update of the batch's stream only."""
        image, label, index = self._unpack(data)

        def branch(i: int) -> tf.Tensor:
            loss = self.stream_update(i, image, label)
            self._modality_loss_trackers[i].update_state(loss)
            return loss

        loss = self._route(index, branch)
        self._loss_tracker_total.update_state(loss)
        return self._logs()

    def test_step(self, data: Any) -> dict[str, tf.Tensor]:
        """Routed evaluation step (batch-norm in inference mode, no updates)."""
        image, label, index = self._unpack(data)

        def branch(i: int) -> tf.Tensor:
            logits = self.streams[self.modalities[i]](image, training=False)["logits"]
            loss = tf.cast(self._loss_function(label, logits), tf.float32)
            self._modality_loss_trackers[i].update_state(loss)
            return loss

        self._loss_tracker_total.update_state(self._route(index, branch))
        return self._logs()

    def predict_step(self, data: Any) -> dict[str, tf.Tensor]:
        """Routed prediction of ``(image, modality_index)`` or ``(image, label, index)`` batches."""
        if isinstance(data, (tuple, list)) and len(data) == 1:
            data = data[0]
        if isinstance(data, (tuple, list)) and len(data) == 3:
            data = (data[0], data[2])
        return self(tuple(data), training=False)
