"""Seeds: the one way a seed is derived from another, for Python integers and TensorFlow seeds.

* :func:`derive_seed` turns an integer seed and integer tags into a new 31-bit integer seed
  (NumPy's ``SeedSequence``: stable across runs, platforms and versions). Weight initialisation,
  the input pipeline's shuffles and a resumed run's reseeding all use it.
* Inside a ``tf.data`` graph the randomness is stateless: a seed there is an int64 tensor of shape
  ``[2]`` (:func:`as_seed`), and :func:`fold_in_seed` derives the seed of a sub-stream from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

SeedLike = tf.Tensor | Sequence[int] | np.ndarray


def derive_seed(seed: int, *tags: int) -> int:
    """A 31-bit seed derived from ``seed`` and integer ``tags``.

    Args:
        seed: the base seed (its absolute value is used).
        *tags: integers naming the derived stream, e.g. a purpose and a step.

    Returns:
        An integer in ``[0, 2**31)``; different tags give independent seeds.
    """
    state = np.random.SeedSequence([abs(int(seed)), *[abs(int(t)) for t in tags]])
    return int(state.generate_state(1)[0] & 0x7FFFFFFF)


def as_seed(seed: SeedLike) -> tf.Tensor:
    """A stateless seed as an int64 tensor of shape [2]."""
    seed = tf.convert_to_tensor(seed)
    if seed.dtype != tf.int64:
        seed = tf.cast(seed, tf.int64)
    return tf.ensure_shape(tf.reshape(seed, [2]), [2])


def fold_in_seed(seed: SeedLike, data: int | tf.Tensor) -> tf.Tensor:
    """The stateless seed of the sub-stream ``data`` of ``seed`` (inside or outside a graph).

    Args:
        seed: Stateless seed, shape ``[2]``.
        data: An integer (python or scalar tensor) that names the sub-stream, e.g. a counter.

    Returns:
        An int64 seed of shape ``[2]``; different ``data`` give independent streams.
    """
    return tf.random.experimental.stateless_fold_in(as_seed(seed), tf.cast(data, tf.int64))
