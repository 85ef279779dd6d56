"""The benchmark's seed ensembles (``--ensemble``): every seed of a scheme and fold as one model.

Beyond the paper (docs/paper.md, section 9): where all the seeds of a scheme and held-out fold
have finished, their models segment the fold's held-out volumes together (probabilities averaged,
:class:`~dltk_mm.inference.ensemble.EnsemblePredictor`) with the runs' own ``improved`` options,
and are scored like one run (protocol :data:`~dltk_mm.benchmark.protocols.ENSEMBLE`, seed
:data:`~dltk_mm.benchmark.evaluate.ENSEMBLE_SEED`). The scores are cached in
``<results_dir>/ensembles/<scheme>/fold<k>/seeds<s>-<t>/evaluation_ensemble.csv`` with the
``.json`` record of what was evaluated (options, weights, scoring and each member's weights file),
so a rerun reuses them and a retrained member makes them be evaluated again; an ensemble of other
seeds is kept beside it. The run folders are only read.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from absl import logging

from dltk_mm.benchmark.evaluate import (
    cached_frame,
    evaluate_ensemble,
    evaluation_record,
    weights_identity,
)
from dltk_mm.benchmark.execute import ProgressFn, RunEvent, RunOutcome, check_finished
from dltk_mm.benchmark.plan import BenchmarkSettings, RunSpec
from dltk_mm.benchmark.protocols import ENSEMBLE, file_stem
from dltk_mm.benchmark.tables import RUN_RESULT_COLUMNS
from dltk_mm.io.files import atomic_write, atomic_write_text

#: Folder of the ensembles' scores under the results folder.
ENSEMBLES_DIR = "ensembles"


def ensemble_file(results_dir: str | Path, scheme: str, fold: int, seeds: Sequence[int]
                  ) -> Path:
    """The cached scores of the ensemble of one scheme and fold's ``seeds`` (``.json`` beside:
    its record); other seeds are another ensemble, kept beside it."""
    members = "-".join(str(seed) for seed in sorted(seeds))
    return (Path(results_dir) / ENSEMBLES_DIR / scheme / f"fold{fold}" / f"seeds{members}"
            / f"evaluation_{file_stem(ENSEMBLE)}.csv")


def ensemble_groups(runs: Sequence[RunSpec], settings: BenchmarkSettings
                    ) -> list[list[RunSpec]]:
    """The runs of each scheme and fold whose seeds have all finished (plan order); the others
    are logged and left out."""
    groups: dict[tuple[str, int], list[RunSpec]] = {}
    for spec in runs:
        groups.setdefault((spec.scheme, spec.fold), []).append(spec)
    complete = []
    for (scheme, fold), members in groups.items():
        waiting = [spec.name for spec in members if not check_finished(spec, settings)]
        if waiting:
            logging.info("no ensemble of %s fold %d yet: %s not finished", scheme, fold,
                         ", ".join(waiting))
        elif len(members) > 1:
            complete.append(members)
    return complete


def ensemble_record(members: Sequence[RunSpec], settings: BenchmarkSettings) -> dict[str, Any]:
    """What identifies an ensemble's scores (compared before reusing them): a run's
    :func:`~dltk_mm.benchmark.evaluate.evaluation_record` with every member's weights file in
    place of the one run's."""
    first = members[0]
    record = evaluation_record(first, settings, first.inference)
    del record["trained"]
    record["members"] = {spec.name: weights_identity(spec.model_dir, settings.weights)
                         for spec in members}
    return record


def ensemble_results(runs: Sequence[RunSpec], settings: BenchmarkSettings, compute: bool = True,
                     progress: ProgressFn | None = None) -> pd.DataFrame:
    """The scores of every complete seed ensemble: cached ones reused, the others evaluated and
    cached unless ``compute`` is False (then left out).

    Args:
        runs: the plan.
        settings: the benchmark's settings.
        compute: evaluate the ensembles that have no cached scores.
        progress: called with a :class:`~dltk_mm.benchmark.execute.RunEvent` (its run: the
            first member; status ``"ensemble"``) after each ensemble evaluated.

    Returns:
        Rows of :data:`~dltk_mm.benchmark.tables.RUN_RESULT_COLUMNS`.
    """
    frames = []
    groups = ensemble_groups(runs, settings)
    for index, members in enumerate(groups, start=1):
        first = members[0]
        path = ensemble_file(settings.results_dir, first.scheme, first.fold,
                             [spec.seed for spec in members])
        wanted = ensemble_record(members, settings)
        frame = cached_frame(path, wanted)
        if frame is None and compute:
            started = time.monotonic()
            logging.info("evaluating the ensemble of %s", ", ".join(s.name for s in members))
            frame = evaluate_ensemble(members, settings, first.inference)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda p, f=frame: f.to_csv(p, index=False))
            atomic_write_text(path.with_suffix(".json"), json.dumps(
                {"protocol": ENSEMBLE, "members": [s.name for s in members], "record": wanted},
                indent=1))
            if progress is not None:
                dice = float(frame["dice"].mean()) if len(frame) else math.nan
                outcome = RunOutcome(first, ENSEMBLE, elapsed_s=time.monotonic() - started,
                                     mean_dice=dice, protocol_dice={ENSEMBLE: dice})
                progress(RunEvent(index, len(groups), first, outcome, len(groups) - index))
        if frame is not None and len(frame):
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(RUN_RESULT_COLUMNS))
    return pd.concat(frames, ignore_index=True)


__all__ = ["ENSEMBLES_DIR", "ensemble_file", "ensemble_groups", "ensemble_record",
           "ensemble_results"]
