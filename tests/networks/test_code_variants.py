"""The authors'-code variants v1_code, v2_code, v4_code (docs/paper.md, section 8).

In the authors' code (``dualstream_fcn_v{1,2,4}.py``) the tensor entering the shared part on the
main path was always the CT stream's, computed on the fed batch, while the decoder's skips were
the fed modality's own. These tests pin that wiring by object identity, by which weights an MR
(or CT) step changes, and by which layers an MR prediction depends on.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from dltk_mm.errors import ConfigurationError  # noqa: E402
from dltk_mm.networks import SCHEMES, LayerRegistry, build_multistream, make_optimizer  # noqa: E402

TINY = {"filters": (2, 4, 4, 4, 8), "num_res_units": 1}
ENCODER = ("stem", "enc1", "enc2", "enc3", "enc4")
DECODER = ("dec3", "dec2", "dec1", "dec0")
# Written out from the authors' code, independently of the library's table: specific blocks and
# the blocks whose CT copies run on the main path of the MR stream.
CODE = {
    "v1_code": (set(ENCODER), set(ENCODER)),
    "v2_code": ({"stem"}, {"stem"}),
    "v4_code": ({"stem", "enc1", "enc2", "enc3", *DECODER}, {"stem", "enc1", "enc2", "enc3"}),
}


def ids(variables) -> set[int]:
    return {id(v) for v in variables}


def layer_ids(layers) -> set[int]:
    return set().union(*(ids(layer.weights) for layer in layers))


def test_table_and_paper_schemes_unchanged() -> None:
    for name, (specific, borrowed) in CODE.items():
        scheme = SCHEMES[name]
        assert scheme.specific_blocks == specific and scheme.feature_source == "ct"
        assert set(scheme.borrowed_blocks("mr")) == borrowed
        assert scheme.borrowed_blocks("ct") == ()
        assert scheme.learning_rate == 1e-4 and "code" in scheme.description
    for name in ("individual", "joint", "v1", "v2", "v3", "v4", "msbn"):
        assert SCHEMES[name].feature_source is None and SCHEMES[name].borrowed_blocks("mr") == ()


@pytest.mark.parametrize("scheme", sorted(CODE))
def test_sharing_by_identity(scheme: str) -> None:
    specific, borrowed = CODE[scheme]
    model = build_multistream(scheme, **TINY)
    registry = model.registry
    own = {m: registry.stream_layers(m) for m in model.modalities}
    lent = registry.borrowed_layers("mr")
    assert registry.borrowed_layers("ct") == {}
    # The MR stream's main path runs exactly the CT stream's copies of the borrowed blocks.
    assert {block for block, _ in lent} == borrowed
    for key, layer in lent.items():
        assert layer is own["ct"][key], key
        assert layer.name.endswith("_ct")
    # Its own copies of the specific blocks are distinct objects with their own variables; the
    # deepest encoder scale is never a skip, so v1_code builds no own MR enc4 copy.
    skips = specific - ({"enc4"} if "enc4" in borrowed else set())
    assert {block for block, _ in own["mr"] if block in specific} == skips
    for key, layer in own["mr"].items():
        if key[0] in specific:
            assert layer is not own["ct"][key] and layer.name.endswith("_mr")
            assert not ids(layer.weights) & ids(own["ct"][key].weights)
        else:
            assert layer is own["ct"][key], key
    if "enc4" in borrowed:
        assert not any(k[0] == "enc4" and k[-1] == "mr" for k in registry.layers)
    # Each stream's variables are exactly its own/shared layers plus the borrowed ones.
    assert ids(model.streams["ct"].weights) == layer_ids(own["ct"].values())
    assert ids(model.streams["mr"].weights) == layer_ids([*own["mr"].values(), *lent.values()])
    assert len(model.weights) == len(ids(model.weights))
    assert ids(model.weights) == ids(model.streams["mr"].weights) | ids(model.streams["ct"].weights)
    # The scheme name round-trips through the build configuration.
    clone = build_multistream(**model.build_config)
    assert clone.scheme == scheme
    assert [v.path for v in clone.weights] == [v.path for v in model.weights]


def _perturbed_output(model, layer, x: np.ndarray) -> np.ndarray:
    kernel = layer.kernel
    saved = kernel.numpy()
    kernel.assign(saved + 0.5)
    try:
        return model.streams["mr"](x, training=False)["logits"].numpy()
    finally:
        kernel.assign(saved)


@pytest.mark.parametrize(("scheme", "depends_on_ct"), [("v2_code", True), ("v2", False)])
def test_mr_prediction_depends_on_the_ct_stem_only_in_the_code_variant(
    scheme: str, depends_on_ct: bool
) -> None:
    keras.utils.set_random_seed(0)
    model = build_multistream(scheme, **TINY)
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 1)).astype(np.float32)
    reference = model.streams["mr"](x, training=False)["logits"].numpy()
    assert reference.shape == (1, 16, 16, 16, 5)
    ct_stem = model.registry.layers[("stem", "stem_conv", "ct")]
    mr_stem = model.registry.layers[("stem", "stem_conv", "mr")]
    assert (np.abs(_perturbed_output(model, ct_stem, x) - reference).max() > 1e-4) == depends_on_ct
    # The own stem always matters: in v2_code through the dec0 skip connection.
    assert np.abs(_perturbed_output(model, mr_stem, x) - reference).max() > 1e-4


def _snapshot(layers) -> dict[str, np.ndarray]:
    return {v.path: v.numpy().copy() for layer in layers for v in layer.weights}


def _one_step(model, modality_index: int) -> None:
    rng = np.random.default_rng(modality_index)
    image = rng.normal(size=(2, 16, 16, 16, 1)).astype(np.float32)
    label = rng.integers(0, 5, size=(2, 16, 16, 16)).astype(np.int32)
    index = np.full((2,), modality_index, np.int32)
    model.fit(tf.data.Dataset.from_tensors((image, label, index)), shuffle=False, verbose=0)


@pytest.mark.parametrize("scheme", ["v1_code", "v4_code"])
def test_routed_steps_update_what_the_code_updated(scheme: str) -> None:
    keras.utils.set_random_seed(1)
    model = build_multistream(scheme, **TINY)
    model.compile(optimizer=make_optimizer(1e-2))
    registry = model.registry
    ct_lent = list(registry.borrowed_layers("mr").values())
    assert ct_lent
    mr_own = [layer for key, layer in registry.layers.items() if key[-1] == "mr"]
    ct_rest = [layer for key, layer in registry.layers.items()
               if key[-1] == "ct" and layer not in set(ct_lent)]

    before = _snapshot(registry.layers.values())
    _one_step(model, model.modality_index("mr"))
    after = _snapshot(registry.layers.values())
    # The CT encoder copies are on the MR stream's main path: their weights get MR gradients and
    # their batch-norm statistics see MR batches (the code's bug).
    for path, value in _snapshot(ct_lent).items():
        assert not np.array_equal(before[path], value), path
    # The MR copies feed the skips, so they train too; CT-only layers off the MR path (v4_code's
    # CT decoder) are bit-identical.
    for path, value in _snapshot(mr_own).items():
        if "moving_variance" not in path:
            assert not np.array_equal(before[path], value), path
    assert ct_rest or scheme == "v1_code"
    for path, value in _snapshot(ct_rest).items():
        np.testing.assert_array_equal(before[path], value, err_msg=path)

    _one_step(model, model.modality_index("ct"))
    # A CT step never touches an MR copy (weights or statistics).
    for path, value in _snapshot(mr_own).items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)


def test_code_variant_needs_a_ct_modality() -> None:
    with pytest.raises(ConfigurationError, match="'ct'.*v4"):
        LayerRegistry("v4_code", modalities=("mr_t1", "mr_t2"))
    LayerRegistry("v4_code", modalities=("mr", "ct"))
    LayerRegistry("v4", modalities=("mr_t1", "mr_t2"))
