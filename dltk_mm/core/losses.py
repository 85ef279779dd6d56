"""Segmentation losses: soft Dice, cross-entropy, their sum (docs/paper.md, section 4.3).

Every loss is a plain function ``loss(labels, logits) -> scalar`` with integer ``labels`` of shape
``(batch, *spatial)`` (a trailing channel axis of size 1 is accepted) and float ``logits`` of shape
``(batch, *spatial, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from dltk_mm.errors import ConfigurationError

LossFunction = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def _prepare(labels: tf.Tensor, logits: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == logits.shape.rank:
        labels = tf.squeeze(labels, axis=-1)
    if labels.shape.rank is not None and labels.shape.rank != logits.shape.rank - 1:
        raise ValueError(
            f"labels of shape {labels.shape} do not match logits of shape {logits.shape}: "
            "expected labels (batch, *spatial) and logits (batch, *spatial, num_classes)"
        )
    return tf.cast(labels, tf.int32), logits


def soft_dice_per_class(labels: tf.Tensor, logits: tf.Tensor, smooth: float = 0.0) -> tf.Tensor:
    """Soft Dice per sample and class, ``(batch, num_classes)``.

    With ``p = softmax(logits)`` and ``g = one_hot(labels)``, summed over the spatial axes:
    ``D = (2 sum(p g) + smooth) / (sum(p) + sum(g) + smooth)`` (docs/paper.md, section 4.3; the
    authors used ``smooth = 0``). Guard: where the denominator is exactly 0 - the class is absent
    from the truth and its predicted probability underflowed to 0 everywhere, i.e. both are empty -
    D is defined as 1 (perfect agreement) instead of 0/0 = NaN; the gradient there is 0. With
    float32 softmax this only happens for extremely confident predictions; otherwise an absent
    class gives ``D = 0`` exactly as in the paper.

    Args:
        labels: integer class map, ``(batch, *spatial)``.
        logits: ``(batch, *spatial, num_classes)``.
        smooth: additive smoothing of numerator and denominator (default 0, paper and code).

    Returns:
        Dice coefficients in [0, 1].
    """
    labels, logits = _prepare(labels, logits)
    num_classes = logits.shape[-1]
    probabilities = tf.nn.softmax(logits, axis=-1)
    truth = tf.one_hot(labels, num_classes, dtype=tf.float32)
    axes = list(range(1, logits.shape.rank - 1))
    numerator = 2.0 * tf.reduce_sum(probabilities * truth, axis=axes) + smooth
    denominator = tf.reduce_sum(probabilities, axis=axes) + tf.reduce_sum(truth, axis=axes) + smooth
    empty = tf.equal(denominator, 0.0)
    safe = tf.where(empty, tf.ones_like(denominator), denominator)
    return tf.where(empty, tf.ones_like(numerator), numerator / safe)


def dice_loss(labels: tf.Tensor, logits: tf.Tensor, smooth: float = 0.0) -> tf.Tensor:
    """Soft Dice loss: 1 - mean over samples and classes (background included) of the soft Dice.

    See :func:`soft_dice_per_class` (Valindria et al. 2018, section 4; docs/paper.md, section 4.3).
    """
    return 1.0 - tf.reduce_mean(soft_dice_per_class(labels, logits, smooth=smooth))


def cross_entropy_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Sparse softmax cross-entropy from logits, averaged over samples and voxels."""
    labels, logits = _prepare(labels, logits)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )


def dice_cross_entropy_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Sum of :func:`dice_loss` and :func:`cross_entropy_loss`."""
    return dice_loss(labels, logits) + cross_entropy_loss(labels, logits)


_LOSSES: dict[str, LossFunction] = {
    "dice": dice_loss,
    "cross_entropy": cross_entropy_loss,
    "dice_cross_entropy": dice_cross_entropy_loss,
}

#: The loss names :func:`get_loss` knows (``"dice"`` is the paper's; docs/paper.md, section 4.3).
LOSS_NAMES: tuple[str, ...] = tuple(_LOSSES)


def get_loss(name: str | LossFunction) -> LossFunction:
    """Resolves a loss name (``"dice"``, ``"cross_entropy"``, ``"dice_cross_entropy"``).

    A callable is returned unchanged.

    Raises:
        ConfigurationError: for an unknown name.
    """
    if callable(name):
        return name
    if name not in _LOSSES:
        raise ConfigurationError(
            f"unknown loss {name!r}: choose one of {sorted(_LOSSES)} or pass a function "
            "(labels, logits) -> scalar"
        )
    return _LOSSES[name]
