"""Per-modality cross-validation folds."""

from __future__ import annotations

import pandas as pd
import pytest

from dltk_mm.errors import ConfigurationError, InputDataError
from dltk_mm.training.folds import assign_folds, split_manifest


def _manifest(num_ct: int = 7, num_mr: int = 6) -> pd.DataFrame:
    rows = [{"subject_id": f"ct{i:02d}", "modality": "ct"} for i in range(num_ct)]
    rows += [{"subject_id": f"mr{i:02d}", "modality": "mr"} for i in range(num_mr)]
    return pd.DataFrame(rows)


def _folds(frame: pd.DataFrame) -> dict[tuple[str, str], int]:
    return {(r.subject_id, r.modality): int(r.fold) for r in frame.itertuples()}


def test_seeded_split_is_deterministic_balanced_and_order_free() -> None:
    manifest = _manifest()
    first = _folds(assign_folds(manifest, num_folds=2, seed=0))
    assert first == _folds(assign_folds(manifest, num_folds=2, seed=0))
    shuffled = manifest.sample(frac=1.0, random_state=3).reset_index(drop=True)
    assert _folds(assign_folds(shuffled, num_folds=2, seed=0)) == first
    # Adding another modality's subjects does not change this modality's split.
    more = _manifest(num_mr=11)
    ct_only = {k: v for k, v in _folds(assign_folds(more, 2, 0)).items() if k[1] == "ct"}
    assert ct_only == {k: v for k, v in first.items() if k[1] == "ct"}
    for modality, size in (("ct", 7), ("mr", 6)):
        counts = pd.Series([v for k, v in first.items() if k[1] == modality]).value_counts()
        assert sorted(counts.index) == [0, 1]
        assert abs(counts[0] - counts[1]) <= 1 and counts.sum() == size
    others = [_folds(assign_folds(manifest, 2, seed)) for seed in range(1, 6)]
    assert any(o != first for o in others)


def test_split_is_disjoint_and_complete() -> None:
    manifest = _manifest()
    seen = []
    for fold in range(3):
        train, held_out = split_manifest(manifest, fold, num_folds=3, seed=1,
                                         modalities=("mr", "ct"))
        keys_train = set(zip(train.subject_id, train.modality, strict=True))
        keys_held = set(zip(held_out.subject_id, held_out.modality, strict=True))
        assert not keys_train & keys_held
        assert len(keys_train | keys_held) == len(manifest)
        assert set(held_out.modality) == {"mr", "ct"}
        seen += sorted(keys_held)
    assert len(seen) == len(set(seen)) == len(manifest)  # every subject held out exactly once


def test_fold_minus_one_trains_on_everything() -> None:
    train, held_out = split_manifest(_manifest(), -1, modalities=("ct",))
    assert len(train) == 7 and set(train.modality) == {"ct"} and held_out.empty


def test_fold_column_is_used() -> None:
    manifest = _manifest(num_ct=4, num_mr=2)
    manifest["fold"] = ["0", "1", "1", "1", "0", "2"]
    train, held_out = split_manifest(manifest, 1, modalities=("ct", "mr"))
    assert sorted(held_out.subject_id) == ["ct01", "ct02", "ct03"]
    assert sorted(train.subject_id) == ["ct00", "mr00", "mr01"]
    with pytest.raises(ConfigurationError, match="fold 5 does not exist"):
        split_manifest(manifest, 5)


def test_bad_fold_values_name_the_line() -> None:
    manifest = _manifest(num_ct=3, num_mr=0)
    manifest["fold"] = ["0", "x", "1"]
    with pytest.raises(InputDataError, match=r"line 3 \(subject ct01\)"):
        assign_folds(manifest)


def test_errors() -> None:
    with pytest.raises(ConfigurationError, match="fold 2 does not exist"):
        split_manifest(_manifest(), 2, num_folds=2)
    with pytest.raises(InputDataError, match="no rows of modality 'pet'"):
        split_manifest(_manifest(), 0, modalities=("pet",))
    manifest = _manifest(num_ct=1, num_mr=4)
    with pytest.raises(InputDataError, match="leaves no ct subject"):
        held = int(assign_folds(manifest, 2, 0).query("modality == 'ct'").fold.iloc[0])
        split_manifest(manifest, held, modalities=("ct", "mr"))
