"""Label presets: map a data set's label ids onto the project's label map.

Project map (Valindria et al., WACV 2018, tables 1-2 order): 0 background, 1 liver, 2 spleen,
3 right kidney, 4 left kidney ("right" is the patient's right).

A preset knows every id its data set uses; ids of organs the project does not segment map to
background, and an id outside the data set's known set is an error (a sign that the wrong preset
was chosen) unless ``allow_unknown=True``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from absl import logging

from dltk_mm.errors import ConfigurationError, InputDataError

LABEL_NAMES: tuple[str, ...] = ("background", "liver", "spleen", "right_kidney", "left_kidney")
NUM_CLASSES = len(LABEL_NAMES)


@dataclasses.dataclass(frozen=True)
class LabelPreset:
    """How a data set's label ids map to the project map.

    Attributes:
        name: preset name.
        mapping: data-set id -> project id, for the ids that map to an organ.
        valid_ids: every id the data set uses (organ ids not in ``mapping`` go to background).
        description: where the ids come from.
    """

    name: str
    mapping: Mapping[int, int]
    valid_ids: frozenset[int]
    description: str = ""

    def apply(self, array: np.ndarray, source: str = "<array>",
              allow_unknown: bool = False) -> np.ndarray:
        """Maps a label array to the project map.

        Args:
            array: the data set's labels (any integer-valued dtype).
            source: the file name, used in error messages.
            allow_unknown: map unknown ids to background (with a warning) instead of failing.

        Returns:
            uint8 array of project labels, same shape.

        Raises:
            InputDataError: for non-integer values or ids the preset does not know.
        """
        values = np.unique(array)
        if np.issubdtype(values.dtype, np.floating) and (
                not np.all(np.isfinite(values)) or np.any(values != np.round(values))):
            raise InputDataError(
                f"{source}: label volume holds non-integer values (e.g. "
                f"{values[values != np.round(values)][:5].tolist()}); a label map must hold "
                "integer ids: check that the label column points to a segmentation, not an image"
            )
        values = values.astype(np.int64)
        unknown = sorted(int(v) for v in values if int(v) not in self.valid_ids)
        if unknown:
            shown = unknown[:20]
            message = (f"{source}: label values {shown}{' ...' if len(unknown) > 20 else ''} are "
                       f"not ids of the '{self.name}' preset ({self.description}; valid ids "
                       f"{_ids_text(self.valid_ids)})")
            if not allow_unknown:
                raise InputDataError(message + "; choose the matching label preset, or allow "
                                     "unknown labels to map them to background")
            logging.warning("%s; mapping them to background", message)
        ids = np.asarray(array)
        result = np.zeros(ids.shape, dtype=np.uint8)
        for source_id, project_id in self.mapping.items():
            if project_id:
                result[ids == source_id] = project_id
        return result

    def inverse(self) -> dict[int, int]:
        """Project id -> the data set's id for that organ (background -> 0)."""
        inverse = {0: 0}
        for source_id, project_id in sorted(self.mapping.items()):
            inverse.setdefault(project_id, source_id)
        return inverse


def _ids_text(ids: frozenset[int]) -> str:
    ordered = sorted(ids)
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}..{ordered[-1]}"
    return str(ordered)


PRESETS: dict[str, LabelPreset] = {
    "identity": LabelPreset(
        "identity", {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}, frozenset(range(5)),
        "already in the project map: 0 bg, 1 liver, 2 spleen, 3 right kidney, 4 left kidney"),
    "btcv": LabelPreset(
        "btcv", {1: 2, 2: 3, 3: 4, 6: 1}, frozenset(range(14)),
        "BTCV: 1 spleen, 2 right kidney, 3 left kidney, 6 liver; 4, 5, 7-13 other organs"),
    "amos": LabelPreset(
        "amos", {1: 2, 2: 3, 3: 4, 6: 1}, frozenset(range(16)),
        "AMOS22: 1 spleen, 2 right kidney, 3 left kidney, 6 liver; 4, 5, 7-15 other organs"),
    "chaos": LabelPreset(
        "chaos", {63: 1, 126: 3, 189: 4, 252: 2}, frozenset({0, 63, 126, 189, 252}),
        "CHAOS MR grey values: 63 liver, 126 right kidney, 189 left kidney, 252 spleen"),
    "totalsegmentator": LabelPreset(
        "totalsegmentator", {1: 2, 2: 3, 3: 4, 5: 1}, frozenset(range(118)),
        "TotalSegmentator v2 'total': 1 spleen, 2 kidney_right, 3 kidney_left, 5 liver; "
        "other classes up to 117"),
}


def get_preset(name: str) -> LabelPreset:
    """The preset called ``name``.

    Raises:
        ConfigurationError: for an unknown name (the message lists the known ones).
    """
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ConfigurationError(
            f"unknown label preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None


def map_labels(array: np.ndarray, preset: str | LabelPreset = "identity",
               source: str = "<array>", allow_unknown: bool = False) -> np.ndarray:
    """Maps a label array to the project map with a preset (see :meth:`LabelPreset.apply`)."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    return preset.apply(array, source=source, allow_unknown=allow_unknown)
