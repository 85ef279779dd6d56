"""Figures 4-7 of Valindria et al. (WACV 2018) with matplotlib (Agg backend, PNG).

* Box plots (the paper's Figures 6 and 7): Dice per organ and scheme for one modality, every
  held-out subject of every fold and seed as one sample; the paper's mean is marked beside each box.
* Overlays (the paper's Figures 4 and 5): one axial slice of one held-out subject per modality, the
  ground truth and every scheme's prediction alpha-blended on the image in the paper's colours
  (liver red, spleen green, right kidney blue, left kidney yellow), radiological view (patient's
  right on the left of the image, anterior at the top), with a legend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from dltk_mm.benchmark.paper_results import ORGAN_TITLES, SCHEME_TITLES, paper_dice  # noqa: E402
from dltk_mm.benchmark.tables import MODALITY_TITLES, check_results, scheme_order  # noqa: E402
from dltk_mm.core.label_map import NUM_CLASSES, organ_names  # noqa: E402
from dltk_mm.io.files import atomic_write  # noqa: E402

#: The paper's label colours (RGB 0-1) for labels 1..4.
LABEL_COLOURS: dict[int, tuple[float, float, float]] = {
    1: (1.0, 0.0, 0.0),  # liver: red
    2: (0.0, 0.8, 0.0),  # spleen: green
    3: (0.0, 0.35, 1.0),  # right kidney: blue
    4: (1.0, 0.9, 0.0),  # left kidney: yellow
}

#: Box colours per scheme (colour-blind friendly "tab10" order).
SCHEME_COLOURS: dict[str, str] = {
    "individual": "#1f77b4", "joint": "#ff7f0e", "v1": "#2ca02c", "v2": "#d62728",
    "v3": "#9467bd", "v4": "#8c564b", "msbn": "#7f7f7f",
}


def _save(figure: plt.Figure, path: str | os.PathLike, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_format = path.suffix.lstrip(".") or "png"
    try:
        return atomic_write(path, lambda target: figure.savefig(
            target, format=image_format, dpi=dpi, bbox_inches="tight", facecolor="white"))
    finally:
        plt.close(figure)


def boxplot_figure(results: pd.DataFrame, modality: str, path: str | os.PathLike,
                   title: str | None = None, dpi: int = 110) -> Path:
    """Box plots of the Dice per organ (one panel each) and scheme for one modality.

    Args:
        results: per-run results (see :data:`dltk_mm.benchmark.tables.RUN_RESULT_COLUMNS`).
        modality: ``"mr"`` or ``"ct"``.
        path: the PNG to write.
        title: figure title (default: names the modality).
        dpi: resolution.

    Returns:
        ``path``.
    """
    frame = check_results(results)
    frame = frame[frame["modality"] == modality]
    schemes = scheme_order(frame["scheme"].unique())
    organs = organ_names(NUM_CLASSES)
    figure, axes = plt.subplots(1, len(organs), figsize=(3.4 * len(organs), 4.4), sharey=True)
    positions = np.arange(1, len(schemes) + 1)
    for axis, organ in zip(np.atleast_1d(axes), organs, strict=True):
        data = []
        for scheme in schemes:
            values = frame[(frame["organ"] == organ) & (frame["scheme"] == scheme)]["dice"]
            values = values.to_numpy(dtype=np.float64)
            data.append(values[np.isfinite(values)])
        boxes = axis.boxplot([d if d.size else [np.nan] for d in data], positions=positions,
                             widths=0.6, patch_artist=True, showfliers=True,
                             medianprops={"color": "black", "linewidth": 1.5},
                             flierprops={"marker": "o", "markersize": 3, "alpha": 0.6})
        for box, scheme in zip(boxes["boxes"], schemes, strict=True):
            box.set_facecolor(SCHEME_COLOURS.get(scheme, "#bbbbbb"))
            box.set_alpha(0.75)
        papers = [paper_dice(modality, organ, s) for s in schemes]
        shown = [(p, v) for p, v in zip(positions, papers, strict=True) if math.isfinite(v)]
        if shown:
            axis.scatter([p for p, _ in shown], [v for _, v in shown], marker="D", s=30,
                         color="black", zorder=3, label="paper mean")
        means = [float(np.mean(d)) if d.size else np.nan for d in data]
        axis.scatter(positions, means, marker="o", s=28, facecolor="white",
                     edgecolor="black", zorder=4)
        axis.set_title(ORGAN_TITLES[organ], fontsize=13)
        axis.set_xticks(positions)
        axis.set_xticklabels([SCHEME_TITLES.get(s, s) for s in schemes], rotation=45,
                             ha="right", fontsize=11)
        axis.set_ylim(0.0, 1.0)
        axis.grid(axis="y", alpha=0.3)
        axis.tick_params(axis="y", labelsize=11)
    first = np.atleast_1d(axes)[0]
    first.set_ylabel("Dice", fontsize=12)
    handles = [plt.Line2D([], [], marker="D", linestyle="", color="black", label="paper mean"),
               plt.Line2D([], [], marker="o", linestyle="", markerfacecolor="white",
                          markeredgecolor="black", label="measured mean"),
               plt.Line2D([], [], color="black", label="measured median")]
    figure.legend(handles=handles, loc="lower center", ncol=3, fontsize=11, frameon=False,
                  bbox_to_anchor=(0.5, -0.06))
    name = MODALITY_TITLES.get(modality, modality.upper())
    figure.suptitle(title or f"Dice per organ and scheme, {name} test subjects", fontsize=14)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(figure, path, dpi)


def best_axial_slice(label: np.ndarray, min_fraction: float = 0.3) -> int:
    """The axial slice (``label[z]``) through the most organs.

    An organ counts on a slice where its area is at least ``min_fraction`` of its largest axial
    area (so that a sliver does not count); ties are broken by the sum of those area fractions.
    """
    label = np.asarray(label)
    fractions = []
    for value in LABEL_COLOURS:
        area = (label == value).sum(axis=(1, 2)).astype(np.float64)
        fractions.append(area / area.max() if area.max() > 0 else area)
    fractions = np.stack(fractions, axis=1)
    counted = (fractions >= min_fraction).sum(axis=1)
    return int(np.lexsort((fractions.sum(axis=1), counted))[-1])


def blend(image_slice: np.ndarray, label_slice: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB of a grey image slice (1st-99th percentile window) with labels alpha-blended on it."""
    image = np.asarray(image_slice, dtype=np.float64)
    low, high = np.percentile(image, [1.0, 99.0])
    grey = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for value, colour in LABEL_COLOURS.items():
        mask = np.asarray(label_slice) == value
        rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * np.asarray(colour)
    return rgb


def overlay_figure(image: np.ndarray, truth: np.ndarray, predictions: Mapping[str, np.ndarray],
                   path: str | os.PathLike, title: str = "", slice_index: int | None = None,
                   scores: Mapping[str, float] | None = None, alpha: float = 0.45,
                   dpi: int = 110) -> Path:
    """One axial slice: the ground truth and every scheme's prediction on the image.

    Args:
        image: preprocessed image ``(z, y, x)`` (canonical LPS: the slice is shown with the
            patient's right on the left, anterior at the top).
        truth: its label map ``(z, y, x)``.
        predictions: scheme -> predicted label map ``(z, y, x)`` (columns in the paper's order).
        path: the PNG to write.
        title: figure title.
        slice_index: axial slice; default :func:`best_axial_slice` of ``truth``.
        scores: scheme -> a Dice to print under its panel (e.g. the subject's mean over organs).
        alpha: label opacity.
        dpi: resolution.

    Returns:
        ``path``.
    """
    z = best_axial_slice(truth) if slice_index is None else int(slice_index)
    schemes = scheme_order(list(predictions))
    panels = [("Ground truth", truth)] + [(SCHEME_TITLES.get(s, s), predictions[s])
                                          for s in schemes]
    height, width = np.asarray(image).shape[1:3]
    panel_w = 2.8
    panel_h = panel_w * height / max(width, 1)
    figure, axes = plt.subplots(1, len(panels), figsize=(panel_w * len(panels), panel_h + 1.3))
    for index, (axis, (name, labels)) in enumerate(zip(np.atleast_1d(axes), panels,
                                                       strict=True)):
        axis.imshow(blend(image[z], labels[z], alpha), interpolation="nearest")
        axis.set_title(name, fontsize=13)
        axis.set_xticks([])
        axis.set_yticks([])
        if index > 0 and scores is not None:
            value = scores.get(schemes[index - 1], math.nan)
            if math.isfinite(value):
                axis.set_xlabel(f"Dice {value:.3f}", fontsize=12)
    organs = organ_names(NUM_CLASSES)
    handles = [Patch(facecolor=colour, edgecolor="black", label=ORGAN_TITLES[organs[value - 1]])
               for value, colour in LABEL_COLOURS.items()]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=12,
                  frameon=False, bbox_to_anchor=(0.5, -0.02))
    if title:
        figure.suptitle(f"{title} (axial slice {z})", fontsize=14)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(figure, path, dpi)


def subject_scores(results: pd.DataFrame, subject_id: str, modality: str,
                   schemes: Sequence[str], fold: int, seed: int) -> dict[str, float]:
    """Mean Dice over organs of one subject per scheme (one fold and seed)."""
    frame = check_results(results)
    frame = frame[(frame["subject_id"] == str(subject_id)) & (frame["modality"] == modality)
                  & (frame["fold"].astype(int) == int(fold))
                  & (frame["seed"].astype(int) == int(seed))]
    scores = {}
    for scheme in schemes:
        values = frame[frame["scheme"] == scheme]["dice"].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        scores[scheme] = float(np.mean(values)) if values.size else math.nan
    return scores
