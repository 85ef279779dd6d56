"""Routed training: isolation of the streams, logs, evaluation, compile options, callbacks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from dltk_mm.core.losses import cross_entropy_loss, dice_loss
from dltk_mm.errors import ConfigurationError
from dltk_mm.networks import build_multistream, make_optimizer

TINY = {"filters": (2, 4, 4, 4, 8), "num_res_units": 1}


def batch(modality_index: int, seed: int, size: int = 2) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(size, 16, 16, 16, 1)).astype(np.float32)
    label = rng.integers(0, 5, size=(size, 16, 16, 16)).astype(np.int32)
    return image, label, np.full((size,), modality_index, np.int32)


def dataset(*batches: tuple[np.ndarray, ...]) -> tf.data.Dataset:
    stacked = tuple(np.stack(parts) for parts in zip(*batches, strict=True))
    return tf.data.Dataset.from_tensor_slices(stacked)


def snapshot(variables) -> dict[int, np.ndarray]:
    return {id(v): np.array(v.numpy()) for v in variables}


def split(model) -> tuple[list, list, list]:
    mr, ct = model.streams["mr"].weights, model.streams["ct"].weights
    mr_ids, ct_ids = {id(v) for v in mr}, {id(v) for v in ct}
    return (
        [v for v in mr if id(v) not in ct_ids],
        [v for v in ct if id(v) not in mr_ids],
        [v for v in mr if id(v) in ct_ids],
    )


def changed(before: dict[int, np.ndarray], v) -> bool:
    return not np.array_equal(before[id(v)], v.numpy())


@pytest.mark.parametrize(("scheme", "jit"), [("v4", False), ("msbn", False), ("v4", True)])
def test_step_updates_only_the_batch_stream(scheme: str, jit: bool) -> None:
    keras.utils.set_random_seed(1)
    model = build_multistream(scheme, **TINY)
    model.compile(jit_compile=jit)
    mr_only, ct_only, shared = split(model)
    assert mr_only and ct_only and shared
    if scheme == "msbn":  # only batch-norm layers are per modality
        assert all("bn" in v.path for v in mr_only + ct_only)
        assert all(v.path.endswith("/kernel") for v in shared)  # convolutions

    before = snapshot(model.weights)
    model.fit(dataset(batch(0, seed=0)), epochs=1, verbose=0, shuffle=False)
    assert all(not changed(before, v) for v in ct_only)  # weights and moving statistics
    assert all(changed(before, v) for v in mr_only)
    assert all(changed(before, v) for v in shared if v.trainable)
    moving = [v for v in mr_only if not v.trainable]
    assert moving and all(changed(before, v) for v in moving)

    if jit:
        return  # the CT direction is covered without XLA; keep the XLA case short
    before = snapshot(model.weights)
    model.fit(dataset(batch(1, seed=1)), epochs=1, verbose=0, shuffle=False)
    assert all(not changed(before, v) for v in mr_only)
    assert all(changed(before, v) for v in ct_only)
    assert model.optimizer.iterations.numpy() == 2


def test_individual_streams_are_independent() -> None:
    model = build_multistream("individual", **TINY)
    model.compile()
    _, ct_only, shared = split(model)
    assert not shared
    before = snapshot(model.weights)
    model.fit(dataset(batch(0, seed=0), batch(0, seed=1)), epochs=1, verbose=0, shuffle=False)
    assert all(not changed(before, v) for v in ct_only)


def test_individual_streams_with_optimizers_of_their_own(tmp_path) -> None:
    """One Adam per stream: an MR batch moves only MR's weights and MR's Adam (iterations, moments);
    a CT batch then finds CT's Adam at its first step, as if CT were trained alone."""
    keras.utils.set_random_seed(2)
    model = build_multistream("individual", **TINY)
    optimizers = {"mr": make_optimizer("individual"), "ct": make_optimizer("individual")}
    model.compile(optimizer=optimizers)
    assert model.stream_optimizers == optimizers and model.optimizer is optimizers["mr"]
    for modality, index in (("mr", 0), ("ct", 1)):
        assert model.optimizer_for(index) is optimizers[modality]
        stream_ids = {id(v) for v in model.stream_variables(modality)}
        assert {id(v) for v in optimizers[modality]._trainable_variables} == stream_ids
    _, ct_only, _ = split(model)
    before = snapshot(model.weights + optimizers["ct"].variables)
    model.fit(dataset(batch(0, seed=0), batch(0, seed=1)), epochs=1, verbose=0, shuffle=False)
    assert [int(o.iterations.numpy()) for o in optimizers.values()] == [2, 0]
    assert all(not changed(before, v) for v in ct_only + optimizers["ct"].variables)
    model.fit(dataset(batch(1, seed=2)), epochs=1, verbose=0, shuffle=False)
    assert [int(o.iterations.numpy()) for o in optimizers.values()] == [2, 1]

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert sorted(loaded.stream_optimizers) == ["ct", "mr"]


def test_optimizers_of_their_own_need_streams_that_share_nothing() -> None:
    model = build_multistream("v4", **TINY)
    with pytest.raises(ConfigurationError, match="share .*only 'individual'"):
        model.compile(optimizer={"mr": make_optimizer("v4"), "ct": make_optimizer("v4")})
    individual = build_multistream("individual", **TINY)
    with pytest.raises(ConfigurationError, match="one optimizer per modality"):
        individual.compile(optimizer={"mr": make_optimizer("individual")})
    shared = make_optimizer("individual")
    with pytest.raises(ConfigurationError, match="of its own"):
        individual.compile(optimizer={"mr": shared, "ct": shared})


def test_logs_per_modality_and_evaluation_matches_manual_loss() -> None:
    model = build_multistream("v3", **TINY)
    model.compile(loss="cross_entropy")
    mr, ct = batch(0, seed=2), batch(1, seed=3)
    history = model.fit(dataset(mr, ct), epochs=1, verbose=0, shuffle=False)
    assert set(history.history) == {"loss", "loss_mr", "loss_ct"}

    before = snapshot(model.weights)
    logs = model.evaluate(dataset(mr, ct), verbose=0, return_dict=True)
    assert all(not changed(before, v) for v in model.weights)  # no updates, BN stats included
    manual = {
        name: float(cross_entropy_loss(b[1], model.streams[name](b[0], training=False)["logits"]))
        for name, b in (("mr", mr), ("ct", ct))
    }
    assert logs["loss_mr"] == pytest.approx(manual["mr"], rel=1e-5)
    assert logs["loss_ct"] == pytest.approx(manual["ct"], rel=1e-5)
    assert logs["loss"] == pytest.approx((manual["mr"] + manual["ct"]) / 2, rel=1e-5)

    predictions = model.predict(
        tf.data.Dataset.from_tensor_slices((ct[0], ct[2])).batch(2), verbose=0
    )
    expected = model.streams["ct"](ct[0], training=False)["logits"].numpy()
    np.testing.assert_allclose(predictions["logits"], expected, rtol=1e-4, atol=1e-5)


def test_size_factor_is_the_stride_product_per_axis() -> None:
    model = build_multistream("joint", **{**TINY, "strides": (1, (1, 2, 2), 2, 2, 1)})
    assert model.size_factor == (4, 8, 8)


def test_mixed_modality_batch_is_rejected() -> None:
    model = build_multistream("v4", **TINY)
    image, _, _ = batch(0, seed=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="single modality"):
        model((image, np.array([0, 1], np.int32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
        model((image, np.array([2, 2], np.int32)))


def test_compile_options_and_optimizer() -> None:
    model = build_multistream("v1", **TINY)
    model.compile()
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert float(optimizer.learning_rate) == pytest.approx(1e-4)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.999, 1e-5)
    assert model._loss_function is dice_loss
    with pytest.raises(ConfigurationError, match="unknown loss"):
        model.compile(loss="mse")
    with pytest.raises(ConfigurationError, match="metrics"):
        model.compile(metrics=["accuracy"])
    assert float(make_optimizer("joint").learning_rate) == pytest.approx(1e-3)
    assert float(make_optimizer(3e-4).learning_rate) == pytest.approx(3e-4)


def test_callbacks_and_keras_file_round_trip(tmp_path) -> None:
    model = build_multistream("msbn", **TINY)
    model.compile(loss="dice_cross_entropy")
    callbacks = [
        keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "model.keras")),
    ]
    model.fit(dataset(batch(0, 0), batch(1, 1)), epochs=1, verbose=0, callbacks=callbacks)
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "loss_mr", "loss_ct"} <= set(header)
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.scheme == "msbn" and loaded.modalities == ("mr", "ct")
    assert loaded.optimizer.iterations.numpy() == 2
    image = batch(1, 5)[0]
    np.testing.assert_allclose(
        loaded.predict_modality(image, "ct")["logits"],
        model.predict_modality(image, "ct")["logits"],
        rtol=1e-6,
    )


def test_tensorflow_checkpoints_hold_every_stream_variable(tmp_path) -> None:
    """tf.train.Checkpoint(model=model) saves both streams, batch-norm statistics included; it and
    dltk_mm's own weight files (streams only) restore every variable into a fresh model."""
    from dltk_mm.training.checkpointing import model_trackable

    model = build_multistream("msbn", **TINY)
    model.compile()
    for i, variable in enumerate(model.variables):
        variable.assign(np.full(variable.shape, 0.5 + i, variable.dtype))
    prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "keras_model"))
    keys = {name for name, _ in tf.train.list_variables(prefix)}
    for modality in ("mr", "ct"):
        stream_keys = {k for k in keys if k.startswith(f"model/streams/{modality}/")}
        moving = [k for k in stream_keys if "moving_" in k]
        assert len(moving) == 2 * len(
            [layer for layer in model.streams[modality].layers if "bn" in layer.name]
        ) > 0
    own = tf.train.Checkpoint(model=model_trackable(model)).write(str(tmp_path / "own"))
    own_keys = {name for name, _ in tf.train.list_variables(own)}
    assert any(k.startswith("model/optimizer/") for k in keys)
    assert all(k.startswith("model/streams/") for k in own_keys - {"_CHECKPOINTABLE_OBJECT_GRAPH"})

    for source in (prefix, own):
        fresh = build_multistream("msbn", **TINY)
        tf.train.Checkpoint(model=fresh).read(source).expect_partial()
        for restored, original in zip(fresh.variables, model.variables, strict=True):
            assert restored.path == original.path
            np.testing.assert_array_equal(restored.numpy(), original.numpy())
