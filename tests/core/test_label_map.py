"""Tests of dltk_mm.core.label_map."""

import pytest

from dltk_mm.core import label_map


def test_organ_names_of_the_project_map_are_the_four_organs_in_table_order():
    assert label_map.organ_names(5) == ("liver", "spleen", "right_kidney", "left_kidney")


def test_organ_names_of_another_map_are_numbered_from_one():
    assert label_map.organ_names(3) == ("class_1", "class_2")
    assert label_map.organ_names(7) == tuple(f"class_{c}" for c in range(1, 7))


def test_organ_names_refuses_a_map_without_foreground():
    with pytest.raises(ValueError, match="at least 2 classes"):
        label_map.organ_names(1)


def test_mirror_swap_pairs_exchange_the_right_and_left_kidney():
    names = label_map.LABEL_NAMES
    assert [(names[a], names[b]) for a, b in label_map.MIRROR_SWAP_PAIRS] == [
        ("right_kidney", "left_kidney")]

