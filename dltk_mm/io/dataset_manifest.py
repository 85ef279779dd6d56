"""From the cases of a dataset layout to a checked manifest CSV, case by case.

Every case of a :class:`~dltk_mm.io.layouts.LayoutScan` is prepared (CHAOS: converted) and
checked on its own with the project's checks - readable headers
(:func:`~dltk_mm.io.readers.read_geometry`), the label on the image's grid
(:meth:`~dltk_mm.io.geometry.Geometry.grid_differences`) and the label values against its preset
(:meth:`~dltk_mm.io.labels.LabelPreset.apply`) - so that a broken case gives one error naming
its file and the fix while the others go on. The manifest is then staged next to its final
place, validated as a whole with :func:`~dltk_mm.io.manifest.load_manifest`, and only then moved
into place; nothing is written before every case has been checked.

Columns: ``subject_id, modality, image, label, label_preset, label_organs`` (the organs the
row's label set annotates, e.g. ``liver`` for CHAOS CT), paths relative to the manifest's
folder (with ``..`` where the data lie elsewhere), so manifest and data can move together.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dltk_mm.core.label_map import LABEL_NAMES
from dltk_mm.errors import InputDataError
from dltk_mm.io.labels import (
    LabelPreset,
    get_preset,
    is_preset_file,
    load_preset_file,
    write_preset_file,
)
from dltk_mm.io.layouts import Case, LayoutScan
from dltk_mm.io.manifest import load_manifest, write_manifest
from dltk_mm.io.readers import read_geometry, read_volume

#: Columns dltk-mm-manifest writes.
COLUMNS = ("subject_id", "modality", "image", "label", "label_preset", "label_organs")

#: ``progress(done, total, subject_id)`` after each case.
ProgressFn = Callable[[int, int, str], None]


@dataclasses.dataclass(frozen=True)
class CheckedCase:
    """A case that passed every check.

    Attributes:
        case: the case.
        preset: its label preset.
        spacing: the image's voxel size (x, y, z) in mm.
        organs_present: project organs with at least one voxel in the label.
    """

    case: Case
    preset: LabelPreset
    spacing: tuple[float, float, float]
    organs_present: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CaseProblem:
    """Why one case was left out: ``message`` names the file and the fix."""

    subject_id: str
    modality: str
    message: str


def _check_grid(case: Case) -> tuple[float, float, float]:
    image = read_geometry(case.image)
    if case.label is not None:
        label = read_geometry(case.label)
        differences = image.grid_differences(label)
        if differences:
            raise InputDataError(
                f"image {case.image} and label {case.label} are on different grids "
                f"({'; '.join(differences)}); resample the label onto the image grid (nearest "
                "neighbour), pair the right files, or leave the case out with --skip_invalid")
    return tuple(float(s) for s in image.spacing)


def check_case(case: Case, preset: LabelPreset) -> CheckedCase:
    """Checks one case: readable headers, one grid, label values known to the preset.

    Raises:
        InputDataError: naming the file and the fix.
    """
    spacing = _check_grid(case)
    organs: tuple[str, ...] = ()
    if case.label is not None:
        label = read_volume(case.label).array
        mapped = preset.apply(label, source=str(case.label))
        organs = tuple(LABEL_NAMES[int(v)] for v in np.unique(mapped) if v)
    return CheckedCase(case, preset, spacing, organs)


def _preset_of(name: str, scan: LayoutScan) -> LabelPreset:
    return scan.presets[name][0] if name in scan.presets else get_preset(name)


def check_scan(scan: LayoutScan, label_preset: str | None = None,
               progress: ProgressFn | None = None) -> tuple[list[CheckedCase], list[CaseProblem]]:
    """Prepares and checks every case of a scan.

    Args:
        scan: the layout scan.
        label_preset: a preset name or file replacing the layout's preset on every row.
        progress: called after each case.

    Returns:
        The cases that passed and one problem per case that did not.
    """
    checked: list[CheckedCase] = []
    problems: list[CaseProblem] = []
    total = len(scan.candidates)
    for done, candidate in enumerate(scan.candidates, start=1):
        try:
            case = candidate.prepare()
            if label_preset:
                case = dataclasses.replace(case, label_preset=label_preset)
            checked.append(check_case(case, _preset_of(case.label_preset, scan)))
        except InputDataError as error:
            problems.append(CaseProblem(candidate.subject_id, candidate.modality, str(error)))
        if progress is not None:
            progress(done, total, candidate.subject_id)
    return checked, problems


def preset_file_path(output: Path, name: str) -> Path:
    """Where the preset derived from a data set is written: next to the manifest."""
    return output.parent / f"{output.stem}.{name}.labels.json"


def _derived_presets(checked: Sequence[CheckedCase], scan: LayoutScan, output: Path
                     ) -> dict[str, Path]:
    """Name -> file of the derived presets the rows use; an existing file must hold the same map.
    """
    files: dict[str, Path] = {}
    for name in sorted({c.case.label_preset for c in checked if c.case.label_preset
                        in scan.presets}):
        preset = scan.presets[name][0]
        path = preset_file_path(output, name)
        if path.exists():
            existing = load_preset_file(path)
            if (dict(existing.mapping) != dict(preset.mapping)
                    or existing.valid_ids != preset.valid_ids):
                raise InputDataError(
                    f"{path}: exists with another label map than the one derived now; move it "
                    "away or choose another --output")
        files[name] = path
    return files


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to the manifest's folder (``..`` allowed; absolute across drives)."""
    try:
        return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:
        return str(path.resolve())


def _preset_cell(reference: str, cells: dict[str, str], base: Path) -> str:
    if reference in cells:
        return cells[reference]
    if is_preset_file(reference):
        return _relative(Path(reference).expanduser(), base)
    return reference


def _new_rows(checked: Sequence[CheckedCase], cells: dict[str, str], base: Path) -> pd.DataFrame:
    rows = [{
        "subject_id": c.case.subject_id, "modality": c.case.modality,
        "image": _relative(c.case.image, base),
        "label": _relative(c.case.label, base) if c.case.label is not None else "",
        "label_preset": _preset_cell(c.case.label_preset, cells, base),
        "label_organs": ";".join(c.preset.organs()) if c.case.label is not None else "",
    } for c in checked]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _combine(existing: Path | None, new: pd.DataFrame) -> pd.DataFrame:
    if existing is None:
        return new
    old = pd.read_csv(existing, dtype=str, keep_default_na=False, skipinitialspace=True)
    keys = set(zip(old.get("subject_id", []), old.get("modality", []), strict=True))
    clashes = [f"{s} ({m})" for s, m in zip(new["subject_id"], new["modality"], strict=True)
               if (s, m) in keys]
    if clashes:
        raise InputDataError(
            f"manifest {existing}: already lists {len(clashes)} of the new cases "
            f"({', '.join(clashes[:10])}{' ...' if len(clashes) > 10 else ''}); --append adds "
            "other cases only: drop --append and write another --output, or remove those rows")
    return pd.concat([old, new], ignore_index=True).fillna("")


def write_checked_manifest(checked: Sequence[CheckedCase], scan: LayoutScan,
                           output: str | os.PathLike, append: bool = False) -> Path:
    """Writes the manifest of the checked cases and validates it with ``load_manifest``.

    Args:
        checked: the cases (see :func:`check_scan`).
        scan: the scan they come from (its derived presets are written next to the manifest).
        output: the manifest CSV.
        append: add the rows to an existing manifest instead of writing a new one.

    Returns:
        The manifest path.

    Raises:
        InputDataError: if ``output`` exists without ``append`` (or is missing with it), if the
            new rows clash with existing ones, or if the whole manifest fails validation (the
            manifest is then left as it was).
    """
    output = Path(output).expanduser().resolve()
    if not checked:
        raise InputDataError(f"{output}: no valid case to write; fix the cases listed above")
    if output.exists() and not append:
        raise InputDataError(f"{output}: exists; pass --append to add these cases to it, or "
                             "choose another --output (it is never overwritten)")
    if append and not output.is_file():
        raise InputDataError(f"{output}: --append needs an existing manifest; drop --append to "
                             "write a new one")
    output.parent.mkdir(parents=True, exist_ok=True)
    files = _derived_presets(checked, scan, output)
    cells = {name: path.name for name, path in files.items()}
    frame = _combine(output if append else None, _new_rows(checked, cells, output.parent))
    staging = output.with_name(f".{output.stem}.staging.csv")
    created: list[Path] = []
    try:
        for name, path in files.items():
            if not path.exists():
                write_preset_file(scan.presets[name][0], path, scan.presets[name][1])
                created.append(path)
        write_manifest(frame, staging)
        try:
            load_manifest(staging)
        except InputDataError as error:  # name the manifest the user asked for
            raise InputDataError(str(error).replace(str(staging), str(output))) from error
        os.replace(staging, output)
    except BaseException:
        staging.unlink(missing_ok=True)
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return output


def summary_rows(checked: Sequence[CheckedCase]) -> tuple[list[list[str]], list[str]]:
    """The summary table (rows, headers): per modality the cases, how many are labelled, in how
    many labels each organ is present, and the range of the voxel sizes."""
    headers = ["modality", "cases", "labelled", *LABEL_NAMES[1:], "spacing x mm",
               "spacing y mm", "spacing z mm"]
    rows = []
    for modality in sorted({c.case.modality for c in checked}):
        group = [c for c in checked if c.case.modality == modality]
        labelled = [c for c in group if c.case.label is not None]
        spacing = np.asarray([c.spacing for c in group])
        ranges = [f"{lo:.3g}" if np.isclose(lo, hi) else f"{lo:.3g}-{hi:.3g}"
                  for lo, hi in zip(spacing.min(axis=0), spacing.max(axis=0), strict=True)]
        organs = [str(sum(organ in c.organs_present for c in labelled))
                  for organ in LABEL_NAMES[1:]]
        rows.append([modality, str(len(group)), str(len(labelled)), *organs, *ranges])
    return rows, headers
