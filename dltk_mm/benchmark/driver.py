"""The benchmark in one call: plan, execute, aggregate (Valindria et al., WACV 2018, Tables 1-3,
Figures 4-7; docs/paper.md, section 7).

For every scheme x held-out fold x seed, one model is trained on the training folds of both
modalities and evaluated on the held-out fold of each modality with that modality's stream
(:mod:`dltk_mm.benchmark.plan`, :mod:`dltk_mm.benchmark.execute`). Each run lives in
``<results_dir>/runs/<scheme>/fold<k>/seed<s>/``. Calling again skips finished runs and resumes an
interrupted one from its newest checkpoint; SIGINT/SIGTERM stop the benchmark after a checkpoint.
Each run is evaluated under the paper's protocol and its own (``improved``,
:mod:`dltk_mm.benchmark.protocols`), scored in the label's own geometry
(:mod:`dltk_mm.benchmark.evaluate`); with ``ablation`` every finished run is also scored under the
ablation's protocols, and with ``ensemble`` the seeds of each scheme and fold are scored as one
model (:mod:`dltk_mm.benchmark.ensemble`). At the end all per-run results are gathered into
``results_all.csv``, ``tables/`` (``tables/improved/``, ``tables/ablation.md``,
``tables/ensemble/``) and ``figures/`` (:mod:`dltk_mm.benchmark.aggregate`).
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dltk_mm.benchmark.aggregate import aggregate
from dltk_mm.benchmark.data import resolve_manifest
from dltk_mm.benchmark.ensemble import ensemble_results
from dltk_mm.benchmark.execute import (
    ProgressFn,
    RunEvent,
    RunOutcome,
    ablation_results,
    check_finished,
    execute_runs,
)
from dltk_mm.benchmark.plan import BenchmarkSettings, RunSpec, plan_runs
from dltk_mm.benchmark.protocols import (
    ABLATION_ADDITIONS,
    ENSEMBLE,
    IMPROVED,
    PAPER,
    main_protocols,
)
from dltk_mm.inference import InferenceConfig
from dltk_mm.training import FolderLock


@dataclasses.dataclass
class BenchmarkReport:
    """The outcome of :func:`run_benchmark`.

    Attributes:
        results_dir: the output folder.
        runs: the plan.
        outcomes: one per run visited, in order.
        interrupted_by: the signal that stopped the benchmark, or None.
        files: name -> path of the tables and figures written (empty when interrupted); the
            ``improved`` protocol's tables are ``improved/<name>``, the ablation's ``ablation``
            and ``ablation.md``.
        elapsed_s: wall time of the call.
        ablation: outcomes of the ablation's scoring (status ``"ablation"``), one per finished
            run scored in this call.
        ensembles: outcomes of the seed ensembles evaluated in this call (status
            ``"ensemble"``, the run: the ensemble's first member).
    """

    results_dir: Path
    runs: list[RunSpec]
    outcomes: list[RunOutcome]
    interrupted_by: int | None
    files: dict[str, Path]
    elapsed_s: float
    ablation: list[RunOutcome] = dataclasses.field(default_factory=list)
    ensembles: list[RunOutcome] = dataclasses.field(default_factory=list)

    def names(self, status: str) -> list[str]:
        """Names (``scheme/fold<k>/seed<s>``) of the runs with ``status``."""
        return [o.spec.name for o in self.outcomes if o.status == status]


def _describe(inference: InferenceConfig) -> str:
    mirror = "off"
    if inference.mirror:
        axes = getattr(inference, "mirror_axes", (0, 1, 2))
        swap = getattr(inference, "mirror_swap", True)
        mirror = f"axes {list(axes)}, {'with' if swap else 'without'} the kidney swap"
    post = "largest component" if inference.largest_component else "none"
    if inference.min_component_voxels:
        post += f", components under {inference.min_component_voxels} voxels removed"
    return (f"sliding window overlap {inference.overlap} ({inference.weighting}), mirroring "
            f"{mirror}, post-processing {post}")


def header(settings: BenchmarkSettings, manifest: Path, runs: Sequence[RunSpec],
           protocol: str = PAPER) -> str:
    """The Markdown that introduces a protocol's ``tables.md`` (``protocol``: ``paper``,
    ``improved`` or ``ablation``): what was run, on what, how."""
    first = runs[0].config if runs else None
    protocols = main_protocols(runs[0].inference) if runs else {}
    title = {PAPER: "Tables 1-3 reproduced (the paper's evaluation protocol)",
             IMPROVED: "Tables 1-3 under the improved evaluation protocol",
             "ablation": "ablation of the inference additions",
             ENSEMBLE: "Tables 1-3 of the seed ensembles"}.get(protocol, protocol)
    lines = [
        f"# dltk_mm: Valindria et al. (WACV 2018), {title}",
        "",
        f"- preset: `{settings.preset.name}` ({settings.preset.description})",
        f"- data: `{manifest}`" + (" (built-in phantoms)" if settings.manifest is None else ""),
        f"- schemes: {', '.join(settings.effective_schemes)}; folds: "
        f"{sorted({r.fold for r in runs})}; seeds: {list(settings.effective_seeds)}",
    ]
    if protocol == "ablation":
        lines.append(f"- evaluation: {settings.weights} weights, the paper's protocol plus "
                     f"{', '.join(ABLATION_ADDITIONS)}; scored in the label's own geometry")
    elif protocol == ENSEMBLE and runs:  # segmented as the runs' own evaluation
        lines.append(f"- evaluation (`{ENSEMBLE}`): per scheme and fold, the models of seeds "
                     f"{list(settings.effective_seeds)} averaged, {settings.weights} weights, "
                     f"{_describe(runs[0].inference)}; scored in the label's own geometry")
    elif protocol in protocols:
        lines.append(f"- evaluation (`{protocol}` protocol): {settings.weights} weights, "
                     f"{_describe(protocols[protocol])}; scored in the label's own geometry "
                     "(the label file's grid and spacing)")
    if protocol == PAPER:
        lines.append("- improved protocol: " + (
            f"{_describe(protocols[IMPROVED])} (tables/improved/)" if IMPROVED in protocols
            else "the same as the paper's (the runs' evaluation is the paper's)"))
    if first is not None:
        lines.append(
            f"- training: {first.steps} steps, batch {first.pipeline.batch_size} x "
            f"{'x'.join(map(str, first.pipeline.patch_size))} at "
            f"{first.preprocessing.spacing_mm} mm, filters {list(first.network.filters)} x "
            f"width {first.network.width}, {first.network.num_res_units} residual units/scale")
    if settings.overrides:
        shown = ", ".join(f"{k}={v!r}" for k, v in settings.overrides.items())
        lines.append(f"- overrides: `{shown}`")
    lines += ["- generated " + datetime.datetime.now().isoformat(timespec="seconds"), ""]
    return "\n".join(lines)


def _prepare(settings: BenchmarkSettings) -> tuple[Path, list[RunSpec]]:
    """The manifest and the plan, every finished run checked against it."""
    manifest = resolve_manifest(settings)
    runs = plan_runs(settings, manifest)
    for spec in runs:
        check_finished(spec, settings)
    return manifest, runs


def run_benchmark(settings: BenchmarkSettings, callbacks: Sequence[Any] = (),
                  aggregate_only: bool = False, progress: ProgressFn | None = None
                  ) -> BenchmarkReport:
    """Runs (or continues) the benchmark and writes the tables and figures.

    Every finished run is checked against the plan before anything is trained. The results
    folder is locked (:class:`~dltk_mm.training.FolderLock`) for the life of the call: a second
    benchmark on the same folder is refused at once.

    Args:
        settings: what to run.
        callbacks: :class:`dltk_mm.training.TrainingCallback` objects for every run's training.
        aggregate_only: only rebuild the tables and figures from the finished runs.
        progress: called with a :class:`~dltk_mm.benchmark.execute.RunEvent` when a run starts
            and ends.

    Returns:
        The :class:`BenchmarkReport`.

    Raises:
        ConfigurationError, InputDataError: bad options or data, a finished run with other
            settings, or a results folder in use by another benchmark.
    """
    started = time.monotonic()
    results_dir = settings.results_dir.expanduser().resolve()
    settings = dataclasses.replace(settings, results_dir=results_dir)
    if settings.manifest is not None:
        _prepare(settings)  # bad data or options are refused before the results folder is used
    outcomes: list[RunOutcome] = []
    interrupted_by = None
    files: dict[str, Path] = {}
    ablation: list[RunOutcome] = []
    ensembles: list[RunOutcome] = []
    with FolderLock(results_dir, purpose="benchmark results folder"):
        manifest, runs = _prepare(settings)
        if not aggregate_only:
            outcomes, interrupted_by = execute_runs(runs, settings, callbacks, progress)
        if interrupted_by is None:
            scores = None
            if settings.ablation:
                scores = ablation_results(runs, settings, compute=not aggregate_only,
                                          progress=_collect(ablation, progress))
            ensemble = None
            if settings.ensemble:
                ensemble = ensemble_results(runs, settings, compute=not aggregate_only,
                                            progress=_collect(ensembles, progress))
            headers = {name: header(settings, manifest, runs, name)
                       for name in (PAPER, IMPROVED, "ablation", ENSEMBLE)}
            files = aggregate(results_dir, headers=headers, ablation=scores, ensemble=ensemble)
    return BenchmarkReport(results_dir=results_dir, runs=runs, outcomes=outcomes,
                           interrupted_by=interrupted_by, files=files,
                           elapsed_s=time.monotonic() - started, ablation=ablation,
                           ensembles=ensembles)


def _collect(outcomes: list[RunOutcome], progress: ProgressFn | None) -> ProgressFn:
    """A progress function that keeps every outcome, then passes the event on."""
    def collect(event: RunEvent) -> None:
        if event.outcome is not None:
            outcomes.append(event.outcome)
        if progress is not None:
            progress(event)

    return collect
