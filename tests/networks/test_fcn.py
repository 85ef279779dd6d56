"""FCN wiring (docs/paper.md, section 2.4): parameter counts, shapes, validation, configuration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.networks import SCHEMES, MultiStreamModel, build_multistream

TINY = {"filters": (2, 4, 4, 4, 8), "num_res_units": 2}


def trainable_count(model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"strided_kernel": "paper", "upscore_kernel": "paper"}, 53_243_425),
        ({"strided_kernel": "code", "upscore_kernel": "code"}, 50_958_881),
    ],
)
def test_full_width_individual_parameter_count(options: dict, expected: int) -> None:
    model = build_multistream("individual", modalities=("ct",), **options)
    assert trainable_count(model.streams["ct"]) == expected
    assert trainable_count(model) == expected


def test_individual_doubles_and_joint_equals_one_stream() -> None:
    individual = build_multistream("individual", **TINY)
    joint = build_multistream("joint", **TINY)
    one = trainable_count(joint.streams["mr"])
    assert trainable_count(joint) == one
    assert trainable_count(individual) == 2 * one


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_output_shapes_every_scheme_and_modality(scheme: str) -> None:
    model = build_multistream(scheme, **TINY)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 24, 1)).astype(np.float32)
    for i, modality in enumerate(model.modalities):
        out = model.streams[modality](x, training=False)
        assert out["logits"].shape == (2, 16, 16, 24, 5)
        assert out["probabilities"].shape == (2, 16, 16, 24, 5)
        assert out["prediction"].shape == (2, 16, 16, 24)
        assert out["prediction"].dtype.name == "int32"
        np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(
            out["prediction"].numpy(), out["logits"].numpy().argmax(-1)
        )
        routed = model((x, np.full((2,), i, np.int32)), training=False)
        np.testing.assert_array_equal(routed["logits"].numpy(), out["logits"].numpy())


def test_width_and_summary() -> None:
    model = build_multistream("v4", filters=(16, 64, 128, 256, 512), width=0.1, num_res_units=1)
    stem = model.registry.stream_layers("mr")[("stem", "stem_conv")]
    assert stem.filters == 2 and stem.kernel_size == (3, 3, 3)
    assert model.registry.stream_layers("mr")[("enc4", "enc4_unit0_conv0")].filters == 51
    lines: list[str] = []
    model.streams["mr"].summary(print_fn=lambda line, **_: lines.append(line))
    assert any("enc4_unit0_conv0" in line for line in lines)
    assert any("stem_conv_mr" in line for line in lines)


def test_build_config_rebuilds_and_is_json() -> None:
    model = build_multistream("msbn", modalities=("ct", "mr"), upsample_border="zero", **TINY)
    config = json.loads(json.dumps(model.build_config))
    clone = build_multistream(**config)
    assert clone.modalities == ("ct", "mr") and clone.scheme == "msbn"
    assert [v.path for v in clone.weights] == [v.path for v in model.weights]
    assert isinstance(MultiStreamModel.from_config(model.get_config()), MultiStreamModel)


def test_weights_round_trip(tmp_path) -> None:
    model = build_multistream("v2", **TINY)
    model.save_weights(tmp_path / "w.weights.h5")
    clone = build_multistream(**model.build_config)
    clone.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(model.weights, clone.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scheme": "v5"}, "unknown scheme"),
        ({"scheme": "v4", "modalities": ("mr", "mr")}, "unique"),
        ({"scheme": "v4", "modalities": ("MR", "ct")}, "lower-case"),
        ({"scheme": "v4", "modalities": ()}, "at least one"),
        ({"scheme": "v4", "modalities": "mr"}, "sequence"),
        ({"scheme": "v4", "input_shape": (64, 64, 60)}, "divisible"),
        ({"scheme": "v4", "filters": (2, 4, 4, 8), "strides": (1, 2, 2, 2)}, "5-scale"),
        ({"scheme": "v4", "strides": (1, 2, 2, 2)}, "same length"),
        ({"scheme": "v4", "strided_kernel": "twice"}, "strided_kernel"),
        ({"scheme": "v4", "upscore_kernel": "big"}, "upscore_kernel"),
        ({"scheme": "v4", "upsample_border": "reflect"}, "border"),
        ({"scheme": "v4", "width": 0}, "width"),
        ({"scheme": "v4", "num_classes": 1}, "num_classes"),
    ],
)
def test_invalid_configurations(kwargs: dict, match: str) -> None:
    kwargs = {**TINY, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        build_multistream(**kwargs)


def test_joint_allows_other_depths_and_fixed_input_shape() -> None:
    model = build_multistream(
        "joint", filters=(2, 4, 4), strides=(1, 2, 2), num_res_units=1, input_shape=(8, 8, 12)
    )
    out = model.streams["ct"](np.zeros((1, 8, 8, 12, 1), np.float32))
    assert out["logits"].shape == (1, 8, 8, 12, 5)


def test_bad_images_are_rejected() -> None:
    model = build_multistream("joint", **TINY)
    with pytest.raises(InputDataError, match="divisible"):
        model((np.zeros((1, 16, 16, 12, 1), np.float32), np.zeros((1,), np.int32)))
    with pytest.raises(InputDataError, match=r"\(batch, z, y, x, 1\)"):
        model.predict_modality(np.zeros((1, 16, 16, 16), np.float32), "ct")
    with pytest.raises(ConfigurationError, match="unknown modality"):
        model.predict_modality(np.zeros((1, 16, 16, 16, 1), np.float32), "pet")
    with pytest.raises(InputDataError, match="modality_index"):
        model(np.zeros((1, 16, 16, 16, 1), np.float32))
