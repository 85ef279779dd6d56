"""The schemes table and the sharing it gives, by object identity (docs/paper.md, section 3.1)."""

from __future__ import annotations

import keras
import pytest

from dltk_mm.errors import ConfigurationError
from dltk_mm.networks import (
    BLOCK_NAMES,
    SCHEMES,
    build_multistream,
    default_learning_rate,
    get_scheme,
)

ENCODER = {"stem", "enc1", "enc2", "enc3", "enc4"}
DECODER = {"dec3", "dec2", "dec1", "dec0"}
# The spec's table, written out independently of the library's table.
EXPECTED_SPECIFIC = {
    "individual": ENCODER | DECODER | {"head"},
    "joint": set(),
    "v1": ENCODER,
    "v2": {"stem", "enc1"},
    "v3": DECODER,
    "v4": {"stem", "enc1", "enc2", "enc3"} | DECODER,
    "msbn": set(),
}
# The authors'-code variants (tests/networks/test_code_variants.py), selected only by name.
CODE_VARIANTS = {"v1_code", "v2_code", "v4_code"}
TINY = {"filters": (2, 4, 4, 4, 8), "num_res_units": 2}


def test_table_matches_spec() -> None:
    assert set(SCHEMES) == set(EXPECTED_SPECIFIC) | CODE_VARIANTS
    assert BLOCK_NAMES == ("stem", "enc1", "enc2", "enc3", "enc4", "dec3", "dec2", "dec1", "dec0",
                           "head")
    for name, specific in EXPECTED_SPECIFIC.items():
        scheme = SCHEMES[name]
        assert scheme.specific_blocks == specific, name
        assert scheme.shared_blocks == set(BLOCK_NAMES) - specific, name
        assert scheme.specific_batch_norm == (name == "msbn"), name


def test_learning_rates() -> None:
    for name in ("individual", "joint"):
        assert default_learning_rate(name) == 1e-3
    for name in ("v1", "v2", "v3", "v4", "msbn"):
        assert default_learning_rate(name) == 1e-4
    assert get_scheme("V4") is SCHEMES["v4"]
    with pytest.raises(ConfigurationError, match="unknown scheme"):
        get_scheme("v5")


def ids(variables) -> set[int]:
    return {id(v) for v in variables}


@pytest.mark.parametrize("scheme", sorted(EXPECTED_SPECIFIC))
def test_sharing_by_identity(scheme: str) -> None:
    model = build_multistream(scheme, **TINY)
    layers = {m: model.registry.stream_layers(m) for m in model.modalities}
    assert layers["mr"].keys() == layers["ct"].keys()
    assert {block for block, _ in layers["mr"]} == set(BLOCK_NAMES)

    shared_vars: set[int] = set()
    for key in layers["mr"]:
        block = key[0]
        mr, ct = layers["mr"][key], layers["ct"][key]
        is_bn = isinstance(mr, keras.layers.BatchNormalization)
        specific = block in EXPECTED_SPECIFIC[scheme] or (scheme == "msbn" and is_bn)
        assert (mr is ct) == (not specific), (scheme, key)
        if not specific:
            shared_vars |= ids(mr.weights)
        else:
            assert not ids(mr.weights) & ids(ct.weights)
        if scheme == "msbn" and is_bn:
            assert mr.name.endswith("_mr") and ct.name.endswith("_ct")

    # Each stream's variables are exactly its registry layers' variables; the intersection of
    # the two streams is exactly the shared layers' variables (BN moving statistics included).
    for m in model.modalities:
        expected = set().union(*(ids(layer.weights) for layer in layers[m].values()))
        assert ids(model.streams[m].weights) == expected
        assert ids(model.stream_variables(m)) == ids(model.streams[m].trainable_weights)
    assert ids(model.streams["mr"].weights) & ids(model.streams["ct"].weights) == shared_vars

    # The model's variable list is the de-duplicated union.
    union = ids(model.streams["mr"].weights) | ids(model.streams["ct"].weights)
    assert len(model.weights) == len(ids(model.weights)) == len(union)


def test_three_modalities_share_one_copy() -> None:
    model = build_multistream("v3", modalities=("ct", "mr_t1", "mr_t2"), **TINY)
    key = ("enc4", "enc4_unit0_conv0")
    assert len({id(model.registry.stream_layers(m)[key]) for m in model.modalities}) == 1
    key = ("dec0", "dec0_skip_conv")
    assert len({id(model.registry.stream_layers(m)[key]) for m in model.modalities}) == 3
