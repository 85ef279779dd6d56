"""The residual FCN of DLTK / Valindria et al. (2018) wired for one modality from a layer registry.

Blocks (docs/paper.md, section 2.4): ``stem`` (3^3 conv), ``enc1..enc{n-1}`` (residual scales, the
first unit of each strided), ``dec{n-2}..dec0`` (upscore units), ``head`` (1^3 conv to the classes).
The :class:`LayerRegistry` hands out the weighted layers: a layer of a shared block is created once
and reused by every stream (literally the same object), a layer of a modality-specific block is
created once per modality. Stateless layers (activations, pooling, padding, sums, upsampling) are
created per stream.

For the authors'-code schemes (``*_code``, :attr:`~dltk_mm.networks.schemes.Scheme.feature_source`
set) the stream of a modality other than the feature source runs its leading specific encoder
blocks twice: the feature source's copies compute the main path into the first shared block (or
the decoder), the stream's own copies compute its skip connections (see
:mod:`dltk_mm.networks.schemes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from dltk_mm.core.residual_unit import (
    BATCH_NORM,
    CONV,
    LayerFactory,
    LayerProvider,
    as_triple,
    conv_factory,
    residual_unit,
)
from dltk_mm.core.upscore import upscore_kernel_size, upscore_unit
from dltk_mm.errors import ConfigurationError
from dltk_mm.networks.schemes import Scheme, get_scheme


def block_names(num_scales: int) -> tuple[str, ...]:
    """Block names of an FCN with ``num_scales`` entries in ``filters``."""
    return (
        ("stem",)
        + tuple(f"enc{i}" for i in range(1, num_scales))
        + tuple(f"dec{i}" for i in range(num_scales - 2, -1, -1))
        + ("head",)
    )


class LayerRegistry:
    """Hands out shared or modality-specific layers according to a scheme.

    Keys are ``(block, layer_name)`` for shared layers and ``(block, layer_name, modality)`` for
    modality-specific ones; layer names start with the block name (``enc1_unit0_conv0``). Names of
    specific layers carry the modality as a suffix (``enc1_unit0_conv0_mr``), shared ones do not.

    A stream of an authors'-code scheme also *borrows* the feature source's copies of some blocks
    (:meth:`provider` with ``copy_of``); those are recorded apart, in :meth:`borrowed_layers`.

    Args:
        scheme: the training scheme (a name or a :class:`Scheme`).
        modalities: the model's modalities, if known; checked against the scheme's
            ``feature_source``.

    Raises:
        ConfigurationError: the scheme takes features from a modality the model does not have.
    """

    def __init__(self, scheme: str | Scheme, modalities: Sequence[str] | None = None) -> None:
        self.scheme = get_scheme(scheme)
        source = self.scheme.feature_source
        if source is not None and modalities is not None and source not in modalities:
            raise ConfigurationError(
                f"scheme {self.scheme.name!r} (the authors' code) feeds the shared part with the "
                f"{source!r} stream's features, but the modalities are {tuple(modalities)}: add "
                f"{source!r} to the modalities or use the paper's scheme "
                f"{self.scheme.name.removesuffix('_code')!r}"
            )
        self.layers: dict[tuple[str, ...], keras.layers.Layer] = {}
        self.used: dict[str, dict[tuple[str, str], keras.layers.Layer]] = {}
        self.borrowed: dict[str, dict[tuple[str, str], keras.layers.Layer]] = {}

    def provider(
        self, block: str, modality: str, copy_of: str | None = None, prefix: str = ""
    ) -> LayerProvider:
        """The :class:`LayerProvider` of ``block`` in the stream of ``modality``.

        Args:
            block: the block name.
            modality: the stream being built.
            copy_of: hand out ``copy_of``'s copies of the block's specific layers instead of
                ``modality``'s (the authors'-code schemes); recorded in :meth:`borrowed_layers`.
            prefix: stripped from the requested layer names before the lookup (so that the
                stateless layers of a second pass through a block get unique names).
        """
        owner = copy_of or modality

        def get(name: str, factory: LayerFactory, kind: str) -> keras.layers.Layer:
            if kind not in (CONV, BATCH_NORM):
                raise ValueError(f"unknown layer kind {kind!r}")
            name = name.removeprefix(prefix)
            specific = self.scheme.is_specific(block, batch_norm=kind == BATCH_NORM)
            key = (block, name, owner) if specific else (block, name)
            if key not in self.layers:
                self.layers[key] = factory(f"{name}_{owner}" if specific else name)
            layer = self.layers[key]
            record = self.used if owner == modality else self.borrowed
            record.setdefault(modality, {})[(block, name)] = layer
            return layer

        return get

    def stream_layers(self, modality: str) -> dict[tuple[str, str], keras.layers.Layer]:
        """``(block, layer name) -> layer`` for each weighted layer of ``modality``'s stream
        (its own or shared copies; see :meth:`borrowed_layers` for the others)."""
        return dict(self.used.get(modality, {}))

    def borrowed_layers(self, modality: str) -> dict[tuple[str, str], keras.layers.Layer]:
        """``(block, layer name) -> layer`` of the feature source's copies that ``modality``'s
        stream runs (authors'-code schemes; empty otherwise)."""
        return dict(self.borrowed.get(modality, {}))


@keras.saving.register_keras_serializable(package="dltk_mm")
class ClassPrediction(keras.layers.Layer):
    """Argmax over the class (last) axis, as int32."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.argmax(inputs, axis=-1, output_type=tf.int32)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape[:-1])

    def compute_output_spec(self, inputs):  # noqa: D102
        return keras.KerasTensor(inputs.shape[:-1], dtype="int32")


def normalise_strides(strides: Sequence[int | Sequence[int]]) -> tuple[tuple[int, int, int], ...]:
    """Per-scale strides as 3-tuples."""
    return tuple(as_triple(s, f"strides[{i}]") for i, s in enumerate(strides))


def build_stream(
    modality: str,
    registry: LayerRegistry,
    num_classes: int = 5,
    filters: Sequence[int] = (16, 64, 128, 256, 512),
    strides: Sequence[int | Sequence[int]] = (1, 2, 2, 2, 1),
    num_res_units: int = 3,
    kernel_size: int | Sequence[int] = (3, 3, 3),
    strided_kernel: str = "paper",
    upscore_kernel: str | int | Sequence[int] = "paper",
    upsample_border: str = "replicate",
    leaky_relu_alpha: float = 0.01,
    batch_norm_momentum: float = 0.99,
    batch_norm_epsilon: float = 1e-3,
    input_shape: Sequence[int | None] = (None, None, None),
) -> keras.Model:
    """Builds the FCN of one modality (DLTK ``residual_fcn_3d``; docs/paper.md, section 2.4).

    Args:
        modality: the stream's modality (used for layer names and the registry).
        registry: gives every weighted layer; decides sharing.
        num_classes: output classes (5: background + 4 organs).
        filters: channels of the stem and of each residual scale.
        strides: stride of the stem and of each residual scale (int or 3-tuple each).
        num_res_units: residual units per scale (the first one strided).
        kernel_size: kernel size of the stem and of the residual units' convolutions.
        strided_kernel: ``"paper"`` (strided conv kernel 2 x stride) or ``"code"`` (= stride).
        upscore_kernel: reduction conv of the upscore units, ``"paper"`` (1^3) or ``"code"`` (3^3).
        upsample_border: ``"replicate"`` (paper) or ``"zero"`` (code).
        leaky_relu_alpha: leaky ReLU slope (0.01).
        batch_norm_momentum: batch-norm momentum (0.99).
        batch_norm_epsilon: batch-norm epsilon (1e-3).
        input_shape: spatial input size ``(z, y, x)``; ``None`` entries for any size.

    Returns:
        A functional ``keras.Model`` named ``stream_{modality}`` mapping ``(b, z, y, x, 1)`` images
        to ``{"logits", "probabilities", "prediction"}``.
    """
    strides = normalise_strides(strides)
    if len(filters) != len(strides) or len(filters) < 2:
        raise ConfigurationError(
            f"filters ({len(filters)} entries) and strides ({len(strides)} entries) must have "
            "the same length of at least 2"
        )
    if num_res_units < 1:
        raise ConfigurationError(f"num_res_units must be >= 1, got {num_res_units}")
    reduce_kernel = upscore_kernel_size(upscore_kernel)
    kernel_size = as_triple(kernel_size, "kernel_size")
    common = {
        "batch_norm_momentum": batch_norm_momentum,
        "batch_norm_epsilon": batch_norm_epsilon,
    }

    def encode(scale: int, x: Any, layers: LayerProvider, prefix: str = "") -> Any:
        if scale == 0:
            return layers("stem_conv", conv_factory(filters[0], kernel_size, strides[0]), CONV)(x)
        for unit in range(num_res_units):
            x = residual_unit(
                x,
                filters[scale],
                strides=strides[scale] if unit == 0 else 1,
                kernel_size=kernel_size,
                strided_kernel=strided_kernel,
                leaky_relu_alpha=leaky_relu_alpha,
                layers=layers,
                name=f"{prefix}enc{scale}_unit{unit}",
                **common,
            )
        return x

    # Authors'-code schemes: the leading specific blocks run as the feature source's copies on the
    # main path (into the first shared block) and as this stream's own copies for the skips.
    source = registry.scheme.feature_source
    borrowed = registry.scheme.borrowed_blocks(modality)
    prefix = f"{source}_copy_"
    image = keras.Input(shape=(*input_shape, 1), name=f"image_{modality}")
    x = own = image
    scales = []
    for scale in range(len(filters)):
        block = "stem" if scale == 0 else f"enc{scale}"
        if block in borrowed:
            x = encode(scale, x, registry.provider(block, modality, source, prefix), prefix)
            if scale < len(filters) - 1:  # a skip connection: from the stream's own copy
                own = encode(scale, own, registry.provider(block, modality))
                scales.append(own)
            else:  # the deepest scale is never a skip: the own copy would be dead, not built
                scales.append(x)
        else:
            x = encode(scale, x, registry.provider(block, modality))
            scales.append(x)
    outputs = _decode(x, scales, registry, modality, num_classes, strides, reduce_kernel,
                      upsample_border, common)
    return keras.Model(image, outputs, name=f"stream_{modality}")


def _decode(x: Any, skips: list[Any], registry: LayerRegistry, modality: str, num_classes: int,
            strides: Sequence[tuple[int, int, int]], reduce_kernel: tuple[int, int, int],
            upsample_border: str, common: dict[str, float]) -> dict[str, Any]:
    """The upscore units dec{n-2}..dec0 from the deepest features, then the head's outputs."""
    for scale in range(len(skips) - 2, -1, -1):
        block = f"dec{scale}"
        x = upscore_unit(
            x,
            skips[scale],
            num_classes,
            strides=strides[scale + 1],
            kernel_size=reduce_kernel,
            border=upsample_border,
            layers=registry.provider(block, modality),
            name=block,
            **common,
        )
    logits = registry.provider("head", modality)(
        "head_conv", conv_factory(num_classes, (1, 1, 1)), CONV
    )(x)
    probabilities = keras.layers.Softmax(axis=-1, name="probabilities", dtype="float32")(logits)
    prediction = ClassPrediction(name="prediction")(logits)
    return {"logits": logits, "probabilities": probabilities, "prediction": prediction}
