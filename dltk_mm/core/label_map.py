"""The project's label map: the one list of organs every module uses.

Label ids follow the order of the paper's result tables (docs/paper.md, sections 1 and 7):
0 background, 1 liver, 2 spleen, 3 right kidney, 4 left kidney, where "right" is the patient's
right. Data sets with other ids are mapped onto this map by the label presets of
:mod:`dltk_mm.io.labels`.
"""

from __future__ import annotations

#: Names of the label ids 0..4 of the project map.
LABEL_NAMES: tuple[str, ...] = ("background", "liver", "spleen", "right_kidney", "left_kidney")

#: Number of classes of the project map, background included.
NUM_CLASSES: int = len(LABEL_NAMES)

#: Label pairs a left-right flip of the patient exchanges (right kidney <-> left kidney).
MIRROR_SWAP_PAIRS: tuple[tuple[int, int], ...] = ((3, 4),)


def organ_names(num_classes: int) -> tuple[str, ...]:
    """Names of the foreground classes ``1 .. num_classes - 1``.

    Args:
        num_classes: number of classes of a label map, background included.

    Returns:
        The organ names of the project map when ``num_classes`` is :data:`NUM_CLASSES`, otherwise
        ``("class_1", ..., "class_{num_classes - 1}")`` (a map that is not the project's).

    Raises:
        ValueError: when ``num_classes`` is below 2 (no foreground class).
    """
    if num_classes < 2:
        raise ValueError(f"a label map needs at least 2 classes (background and one organ), "
                         f"got num_classes={num_classes}")
    if num_classes == NUM_CLASSES:
        return LABEL_NAMES[1:]
    return tuple(f"class_{label}" for label in range(1, num_classes))
