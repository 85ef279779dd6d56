"""The numbers the paper reports (Valindria et al., WACV 2018, Tables 1-3; docs/paper.md,
section 7), as data.

Tables 1 (MR) and 2 (CT) give the mean Dice per organ and scheme over all test subjects of the
2-fold cross-validation and its three repetitions. Table 3 gives, per scheme, the mean Dice over
all organs with MR and CT averaged; the paper prints no standard deviations for it (nor for Tables
1 and 2), so only means can be compared. The ``msbn`` scheme (Dou et al., 2020) is not in the
paper and has no reference numbers.
"""

from __future__ import annotations

import math

#: Display names of the organs of :data:`dltk_mm.core.label_map.LABEL_NAMES`.
ORGAN_TITLES: dict[str, str] = {
    "liver": "Liver",
    "spleen": "Spleen",
    "right_kidney": "R kidney",
    "left_kidney": "L kidney",
}

#: The schemes in the paper's column order.
PAPER_SCHEMES: tuple[str, ...] = ("individual", "joint", "v1", "v2", "v3", "v4")

#: Display names of the schemes (the paper's column headers; msbn and the authors'-code variants
#: are this project's additions).
SCHEME_TITLES: dict[str, str] = {
    "individual": "Individual",
    "joint": "Joint",
    "v1": "V1",
    "v2": "V2",
    "v3": "V3",
    "v4": "V4",
    "msbn": "MSBN",
    "v1_code": "V1 (code)",
    "v2_code": "V2 (code)",
    "v4_code": "V4 (code)",
}

#: Table 1 (MR) and Table 2 (CT): modality -> organ -> scheme -> mean Dice.
PAPER_DICE: dict[str, dict[str, dict[str, float]]] = {
    "mr": {
        "liver": dict(zip(PAPER_SCHEMES, (0.913, 0.903, 0.877, 0.862, 0.905, 0.914), strict=True)),
        "spleen": dict(zip(PAPER_SCHEMES, (0.772, 0.772, 0.728, 0.732, 0.736, 0.790),
                           strict=True)),
        "right_kidney": dict(zip(PAPER_SCHEMES, (0.835, 0.842, 0.804, 0.792, 0.819, 0.871),
                                 strict=True)),
        "left_kidney": dict(zip(PAPER_SCHEMES, (0.821, 0.771, 0.748, 0.741, 0.810, 0.833),
                                strict=True)),
    },
    "ct": {
        "liver": dict(zip(PAPER_SCHEMES, (0.914, 0.875, 0.900, 0.902, 0.895, 0.919), strict=True)),
        "spleen": dict(zip(PAPER_SCHEMES, (0.824, 0.834, 0.822, 0.824, 0.817, 0.859),
                           strict=True)),
        "right_kidney": dict(zip(PAPER_SCHEMES, (0.820, 0.806, 0.824, 0.815, 0.793, 0.838),
                                 strict=True)),
        "left_kidney": dict(zip(PAPER_SCHEMES, (0.808, 0.822, 0.833, 0.818, 0.819, 0.851),
                                strict=True)),
    },
}

#: Table 3: scheme -> mean Dice over the four organs, MR and CT averaged (means only).
PAPER_OVERALL: dict[str, float] = dict(
    zip(PAPER_SCHEMES, (0.838, 0.828, 0.817, 0.811, 0.824, 0.860), strict=True)
)

#: The paper's table for each modality ("mr" is Table 1, "ct" Table 2).
TABLE_NUMBER: dict[str, int] = {"mr": 1, "ct": 2}


def paper_dice(modality: str, organ: str, scheme: str) -> float:
    """The paper's mean Dice of ``organ`` for ``scheme`` on ``modality`` (Tables 1-2).

    Returns:
        The value, or NaN where the paper has none (another modality, organ or scheme, e.g.
        ``msbn``).
    """
    return PAPER_DICE.get(modality, {}).get(organ, {}).get(scheme, math.nan)


def paper_overall(scheme: str) -> float:
    """The paper's overall mean Dice of ``scheme`` (Table 3), or NaN where it has none."""
    return PAPER_OVERALL.get(scheme, math.nan)
