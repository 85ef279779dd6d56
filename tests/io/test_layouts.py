"""Tests of dltk_mm.io.layouts: BTCV, AMOS and two-folder layouts found on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from dltk_mm.errors import InputDataError
from dltk_mm.io.layouts import scan_amos, scan_btcv, scan_folders, volume_stem
from tests.io import layout_builders as lb


def _cases(scan) -> dict[str, object]:  # noqa: ANN001
    return {c.subject_id: c.prepare() for c in scan.candidates}


def test_btcv_training_and_testing(tmp_path: Path) -> None:
    root = lb.make_btcv(tmp_path / "btcv")
    for where in (root, root / "RawData"):
        cases = _cases(scan_btcv(where))
        assert sorted(cases) == ["btcv_0001", "btcv_0002", "btcv_0061"]
        assert cases["btcv_0001"].label.name == "label0001.nii.gz"
        assert cases["btcv_0061"].label is None  # Testing: unlabelled
        assert {c.modality for c in cases.values()} == {"ct"}
        assert {c.label_preset for c in cases.values()} == {"btcv"}
        assert [c.labelled for c in scan_btcv(where).candidates] == [True, True, False]


def test_btcv_missing_label_is_one_error(tmp_path: Path) -> None:
    root = lb.make_btcv(tmp_path / "btcv")
    (root / "RawData/Training/label/label0002.nii.gz").unlink()
    first, second, _ = scan_btcv(root).candidates
    assert first.prepare().label is not None
    with pytest.raises(InputDataError, match=r"label0002.nii.gz: label file of btcv_0002 not "
                                             r"found.*--skip_invalid"):
        second.prepare()
    with pytest.raises(InputDataError, match="RawData/Training/img"):
        scan_btcv(tmp_path / "nothing")


@pytest.mark.parametrize("with_json", [True, False])
def test_amos_modality_from_case_id(tmp_path: Path, with_json: bool) -> None:
    root = lb.make_amos(tmp_path / "amos22", with_json=with_json)
    cases = _cases(scan_amos(root))
    assert {s: c.modality for s, c in cases.items()} == {
        "amos_0001": "ct", "amos_0507": "mr", "amos_0008": "ct", "amos_0588": "mr",
        "amos_0009": "ct"}
    assert cases["amos_0588"].label.parent.name == "labelsVa"
    assert cases["amos_0009"].label is None
    assert {c.label_preset for c in cases.values()} == {"amos"}
    assert scan_amos(root, first_mr_id=600).candidates[1].modality == "ct"


def test_amos_boundary_is_501(tmp_path: Path) -> None:
    root = lb.make_amos(tmp_path / "amos22", train=(500, 501), validation=(), test=())
    assert [c.modality for c in scan_amos(root).candidates] == ["ct", "mr"]


def test_folders_matched_by_stem_with_globs(tmp_path: Path) -> None:
    for name in ("a_ct.nii.gz", "b_ct.nii.gz", "c_mr.nii.gz"):
        lb.write_nifti(tmp_path / "img" / name, lb.image_volume())
    for name in ("a_ct.nii.gz", "c_mr.nii.gz"):
        lb.write_nifti(tmp_path / "lab" / name, lb.organ_label([1]))
    scan = scan_folders(tmp_path / "img", tmp_path / "lab", "ct", "identity", ["*_ct.nii.gz"])
    assert [c.subject_id for c in scan.candidates] == ["a_ct", "b_ct"]
    assert scan.candidates[0].prepare().label == tmp_path / "lab" / "a_ct.nii.gz"
    with pytest.raises(InputDataError, match="b_ct.nii.gz: label file of b_ct not found"):
        scan.candidates[1].prepare()
    unlabelled = scan_folders(tmp_path / "img", None, "mr", "identity")
    assert [c.prepare().label for c in unlabelled.candidates] == [None, None, None]
    with pytest.raises(InputDataError, match="no volume files matching"):
        scan_folders(tmp_path / "img", None, "ct", "identity", ["*.mha"])


def test_volume_stem() -> None:
    assert volume_stem(Path("img0001.nii.gz")) == "img0001"
    assert volume_stem(Path("x.y.mha")) == "x.y"
