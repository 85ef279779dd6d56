"""Tests of dltk_mm.io.manifest: CSV manifests with clear errors per row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dltk_mm.errors import InputDataError
from dltk_mm.io.geometry import Geometry
from dltk_mm.io.manifest import load_manifest, row_label_preset, write_manifest
from dltk_mm.io.readers import write_volume

GRID = Geometry.from_orientation("LAS", (1.5, 1.5, 6.0), (-100.0, 90.0, -40.0), (8, 7, 5))


def _write_pair(folder: Path, name: str, label_grid: Geometry = GRID) -> tuple[Path, Path]:
    image = write_volume(np.zeros(GRID.shape, np.float32), folder / "images" / f"{name}.nii.gz",
                         GRID)
    label = write_volume(np.zeros(label_grid.shape, np.uint8),
                         folder / "labels" / f"{name}.nii.gz", label_grid)
    return image, label


def _csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_valid_manifest_relative_absolute_and_extra_columns(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a")
    image_b, label_b = _write_pair(tmp_path, "b")
    csv = _csv(tmp_path / "m.csv", f"""
subject_id,modality,image,label,fold
a,CT,images/a.nii.gz,labels/a.nii.gz,0
b,mr,{image_b},{label_b},1
c,mr,images/a.nii.gz,,1
""")
    frame = load_manifest(csv, modalities=("ct", "mr"))
    assert list(frame["subject_id"]) == ["a", "b", "c"]
    assert list(frame["modality"]) == ["ct", "mr", "mr"]
    assert frame.loc[0, "image"] == str(tmp_path / "images" / "a.nii.gz")
    assert Path(frame.loc[0, "label"]).is_absolute()
    assert frame.loc[2, "label"] is None
    assert list(frame["fold"]) == ["0", "1", "1"]
    assert frame.attrs["manifest_path"] == str(csv.resolve())


def test_manifest_without_label_column(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a")
    csv = _csv(tmp_path / "m.csv", "subject_id,modality,image\na,ct,images/a.nii.gz")
    frame = load_manifest(csv)
    assert frame.loc[0, "label"] is None
    with pytest.raises(InputDataError, match="line 2 \\(subject a\\): no label"):
        load_manifest(csv, require_labels=True)


def test_missing_column(tmp_path: Path) -> None:
    csv = _csv(tmp_path / "m.csv", "subject,modality,image\na,ct,x.nii.gz")
    with pytest.raises(InputDataError, match=r"missing column\(s\) \['subject_id'\]") as error:
        load_manifest(csv)
    assert str(csv.resolve()) in str(error.value)


def test_missing_manifest_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="not found"):
        load_manifest(tmp_path / "absent.csv")
    _write_pair(tmp_path, "a")
    csv = _csv(tmp_path / "m.csv", """
subject_id,modality,image,label
a,ct,images/a.nii.gz,labels/a.nii.gz
b,ct,images/missing.nii.gz,labels/a.nii.gz
""")
    with pytest.raises(InputDataError) as error:
        load_manifest(csv)
    message = str(error.value)
    assert str(csv.resolve()) in message
    assert "line 3 (subject b)" in message
    assert str(tmp_path / "images" / "missing.nii.gz") in message and "not found" in message
    assert "line 2" not in message
    assert len(load_manifest(csv, check_files=False)) == 2


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "junk.nii.gz").write_bytes(b"\x00junk" * 10)
    csv = _csv(tmp_path / "m.csv", "subject_id,modality,image\nj,ct,junk.nii.gz")
    with pytest.raises(InputDataError, match="line 2 \\(subject j\\): image .*junk.nii.gz"):
        load_manifest(csv)


def test_duplicate_subject_and_unknown_modality(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a")
    csv = _csv(tmp_path / "m.csv", """
subject_id,modality,image,label
a,ct,images/a.nii.gz,labels/a.nii.gz
a,mr,images/a.nii.gz,labels/a.nii.gz
a,ct,images/a.nii.gz,labels/a.nii.gz
z,pet,images/a.nii.gz,labels/a.nii.gz
""")
    with pytest.raises(InputDataError) as error:
        load_manifest(csv, modalities=["ct", "mr"])
    message = str(error.value)
    assert "line 4 (subject a): duplicate subject 'a' with modality 'ct' (also on line 2)" \
        in message
    assert "line 3" not in message  # same subject, other modality: fine
    assert "line 5 (subject z): unknown modality 'pet'" in message and "['ct', 'mr']" in message
    assert "2 problem(s)" in message


@pytest.mark.parametrize(
    ("label_grid", "word"),
    [
        (Geometry(GRID.spacing, GRID.origin, GRID.direction, (8, 7, 6)), "size"),
        (Geometry((1.5, 1.5, 5.0), GRID.origin, GRID.direction, GRID.size), "spacing"),
        (Geometry(GRID.spacing, (-100.0, 90.0, -34.0), GRID.direction, GRID.size), "origin"),
        (Geometry.from_orientation("LPS", GRID.spacing, GRID.origin, GRID.size), "direction"),
    ],
)
def test_image_and_label_on_different_grids(tmp_path: Path, label_grid: Geometry,
                                            word: str) -> None:
    image, label = _write_pair(tmp_path, "a", label_grid)
    csv = _csv(tmp_path / "m.csv", f"subject_id,modality,image,label\na,mr,{image},{label}")
    with pytest.raises(InputDataError, match="different grids") as error:
        load_manifest(csv)
    message = str(error.value)
    assert str(image) in message and str(label) in message and word in message
    assert "resample the label" in message
    assert len(load_manifest(csv, check_grids=False)) == 1


def test_label_preset_column(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a")
    _write_pair(tmp_path, "b")
    csv = _csv(tmp_path / "m.csv", """
subject_id,modality,image,label,label_preset
a,ct,images/a.nii.gz,labels/a.nii.gz, BTCV
b,mr,images/b.nii.gz,labels/b.nii.gz,chaos
c,mr,images/b.nii.gz,labels/b.nii.gz,
""")
    frame = load_manifest(csv)
    assert list(frame["label_preset"]) == ["btcv", "chaos", None]
    assert row_label_preset(frame.iloc[2].to_dict(), "amos") == "amos"
    assert row_label_preset(frame.iloc[0].to_dict(), "amos") == "btcv"
    assert "label_preset" not in load_manifest(_csv(
        tmp_path / "plain.csv", "subject_id,modality,image\na,ct,images/a.nii.gz")).columns


def test_unknown_label_preset_names_the_line(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a")
    csv = _csv(tmp_path / "m.csv", """
subject_id,modality,image,label_preset
a,ct,images/a.nii.gz,btcv
b,mr,images/a.nii.gz,chaos_t2
""")
    with pytest.raises(InputDataError) as error:
        load_manifest(csv)
    message = str(error.value)
    assert "line 3 (subject b): unknown label preset 'chaos_t2'" in message
    assert "'amos', 'btcv', 'chaos'" in message and "line 2" not in message
    with pytest.raises(InputDataError, match="subject b .*unknown label preset 'x'"):
        row_label_preset({"subject_id": "b", "modality": "mr", "label_preset": "x"}, "identity")


def test_write_manifest_round_trip(tmp_path: Path) -> None:
    image, label = _write_pair(tmp_path / "data", "a")
    frame = pd.DataFrame({"subject_id": ["a"], "modality": ["ct"], "image": [str(image)],
                          "label": [str(label)], "fold": [1]})
    path = write_manifest(frame, tmp_path / "data" / "manifest.csv")
    assert "images/a.nii.gz" in path.read_text()
    loaded = load_manifest(path)
    assert loaded.loc[0, "image"] == str(image.resolve())
    assert loaded.loc[0, "fold"] == "1"


def test_real_manifest(real_data_dir: Path) -> None:
    frame = load_manifest(real_data_dir / "manifest.csv", modalities=("mr", "ct"),
                          require_labels=True)
    assert len(frame) == 9
    assert set(frame["modality"]) == {"ct", "mr"}
    assert all(Path(p).is_file() for p in frame["image"])
    assert "source" in frame.columns


def test_line_numbers_count_blank_lines_and_multi_line_cells(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a")
    csv = tmp_path / "m.csv"
    csv.write_text(
        "subject_id,modality,image,label,note\n"
        "\n"
        'a,ct,images/a.nii.gz,labels/a.nii.gz,"scanned twice:\nsecond series used"\n'
        "\n"
        "b,mr,images/missing.nii.gz,labels/a.nii.gz,\n"
    )
    with pytest.raises(InputDataError) as error:
        load_manifest(csv)
    message = str(error.value)
    assert "line 6 (subject b): image" in message and "missing.nii.gz" in message
    assert "1 problem(s)" in message


def test_a_label_preset_file_is_resolved_against_the_manifest_folder(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a")
    (tmp_path / "maps").mkdir()
    preset = tmp_path / "maps" / "Organs.json"
    preset.write_text('{"labels": {"0": "background", "1": "liver"}}')
    csv = _csv(tmp_path / "m.csv", """
subject_id,modality,image,label_preset
a,ct,images/a.nii.gz,maps/Organs.json
""")
    frame = load_manifest(csv)
    assert list(frame["label_preset"]) == [str(preset)]  # absolute, case kept
    assert row_label_preset(frame.to_dict("records")[0], "identity") == str(preset)
