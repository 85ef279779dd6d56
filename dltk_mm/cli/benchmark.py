"""``dltk-mm-benchmark``: the paper's experiment in one command (Valindria et al., WACV 2018,
Tables 1-3, Figures 4-7).

Usage::

    dltk-mm-benchmark --preset=smoke                  # built-in phantoms, minutes
    dltk-mm-benchmark --preset=paper --manifest=/data/manifest.csv --label_preset=amos \\
        --results_dir=/results

Every scheme x held-out fold x seed of the preset is trained (the paper's settings, then the
``--preset``'s overrides, then any ``dltk-mm-train`` flag given here, e.g. ``--steps=20000``) and
evaluated on its held-out fold, scored in the label's own geometry: under the paper's protocol
(``tables/``, ``figures/``) and, where it differs, the ``improved`` one (``tables/improved/``):
the run's validation inference changed by the ``--eval_*`` flags. ``--ablation`` also scores every
finished run under the paper's protocol plus one inference addition each
(``tables/ablation.md``); ``--ensemble`` scores the seeds of each scheme and fold as one model
(``tables/ensemble/``). Rerunning the command skips finished runs and resumes an interrupted one
from its newest checkpoint; at the end (or with ``--aggregate_only``) the tables and figures are
written. See :mod:`dltk_mm.benchmark` and ``experiments/paper/README.md``.

Exit status: 0 finished; 2 bad options or input data; 130/143 interrupted by SIGINT/SIGTERM (rerun
the same command to continue).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from absl import flags

from dltk_mm import flag_fields
from dltk_mm.benchmark import (
    AVAILABLE_SCHEMES,
    BENCHMARK_PRESETS,
    BenchmarkReport,
    BenchmarkSettings,
    RunEvent,
    RunOutcome,
    get_benchmark_preset,
    run_benchmark,
)
from dltk_mm.cli._common import handle_errors, interrupted_status, run_command
from dltk_mm.errors import ConfigurationError
from dltk_mm.inference.segment import WEIGHTINGS, InferenceConfig
from dltk_mm.training import TrainConfig, TrainingCallback
from dltk_mm.training.config_flags import train_flag_specs
from dltk_mm.training.recipes import recipe_overrides

FLAGS = flags.FLAGS

#: ``dltk-mm-train`` flags the benchmark sets itself for every run (and the option to use).
RESERVED_TRAIN_FLAGS: dict[str, str] = {"scheme": "--schemes", "fold": "--folds",
                                        "seed": "--seeds"}
#: Prefix of the flags of the evaluation's InferenceConfig (``--eval_overlap``, ...).
EVAL_PREFIX = "eval_"


def train_override_specs() -> tuple[flag_fields.FlagSpec, ...]:
    """The ``dltk-mm-train`` flags accepted here (all but manifest, scheme, fold and seed)."""
    return tuple(s for s in train_flag_specs()
                 if s.name not in RESERVED_TRAIN_FLAGS and s.name != "manifest")


def evaluation_specs() -> tuple[flag_fields.FlagSpec, ...]:
    """The flags of the evaluation's :class:`~dltk_mm.inference.InferenceConfig`."""
    names = {path: EVAL_PREFIX + path for path in flag_fields.leaf_fields(InferenceConfig)}
    return flag_fields.derive_specs(InferenceConfig, names=names,
                                    choices={"weighting": WEIGHTINGS})


def _define_reserved(fv: flags.FlagValues) -> None:
    for name, instead in RESERVED_TRAIN_FLAGS.items():
        flags.DEFINE_string(name, None, f"Not accepted: set for every run; use {instead}.",
                            flag_values=fv)
        flags.register_validator(name, lambda value: value is None, flag_values=fv,
                                 message=f"--{name} is set by the benchmark for every run; use "
                                         f"{instead} instead")


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines the benchmark's flags, every ``dltk-mm-train`` flag and the ``--eval_*`` flags."""
    flags.DEFINE_enum("preset", "paper", sorted(BENCHMARK_PRESETS), "Settings on top of the "
                      "paper's: paper (GPU), cpu (about 8-14 minutes per model on 2 cores), smoke "
                      "(minutes).", flag_values=fv)
    flags.DEFINE_string("manifest", None, "Manifest CSV of CT and MR volumes with labels "
                        "(default: built-in phantoms generated into <results_dir>/data).",
                        flag_values=fv)
    flags.DEFINE_string("results_dir", None, "Output folder (default: results/<preset>).",
                        flag_values=fv)
    flags.DEFINE_list("schemes", None, "Schemes (default: the preset's); from "
                      f"{list(AVAILABLE_SCHEMES)} (*_code: the authors' code's wiring).",
                      flag_values=fv)
    flags.DEFINE_list("folds", None, "Held-out folds (default: the preset's, else all).",
                      flag_values=fv)
    flags.DEFINE_list("seeds", None, "Training seeds, one repetition each (default: the "
                      "preset's; paper: 0,1,2).", flag_values=fv)
    flags.DEFINE_integer("phantoms_per_modality", None, "Phantoms per modality without "
                         "--manifest (default: the preset's).", lower_bound=2, flag_values=fv)
    flags.DEFINE_integer("phantom_seed", 0, "Seed of the phantom generator.", flag_values=fv)
    flags.DEFINE_enum("weights", "last", ["last", "best"], "Evaluate the last weights (no "
                      "selection on the test fold) or the best validation weights.",
                      flag_values=fv)
    flags.DEFINE_bool("surface_metrics", True, "Also compute HD95 and ASSD.", flag_values=fv)
    flags.DEFINE_bool("aggregate_only", False, "Only rebuild the tables and figures from the "
                      "finished runs.", flag_values=fv)
    flags.DEFINE_integer("max_runs", None, "Stop after training this many runs (rerun to "
                         "continue).", lower_bound=1, flag_values=fv)
    flags.DEFINE_bool("ablation", False, "Also score every finished run under the paper's "
                      "evaluation protocol plus one inference addition each (+gaussian, "
                      "+mirror, +mirror_no_swap, +mirror_no_lr, +largest_component, all; "
                      "tables/ablation.md); reuses the trained models and cached scores.",
                      flag_values=fv)
    flags.DEFINE_bool("ensemble", False, "Also score, per scheme and fold, the ensemble of "
                      "its seeds' models (probabilities averaged, the runs' own evaluation "
                      "options; tables/ensemble/); needs --seeds with two or more.",
                      flag_values=fv)
    flag_fields.define_flags(fv, TrainConfig, train_override_specs(), mark_required=False)
    flag_fields.define_flags(fv, InferenceConfig, evaluation_specs())
    _define_reserved(fv)


def _ints(values: list[str] | None, name: str) -> tuple[int, ...] | None:
    if values is None:
        return None
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ConfigurationError(f"--{name} must be comma-separated integers, got "
                                 f"{','.join(values)}") from None


def train_overrides(fv: flags.FlagValues = FLAGS) -> dict[str, Any]:
    """``{dotted TrainConfig field: value}`` of the ``dltk-mm-train`` flags given; a ``--recipe``
    brings its fields, under the flags given (and over the preset's)."""
    overrides = flag_fields.flag_values(fv, train_override_specs(), only_present=True)
    if "recipe" in overrides:
        overrides = recipe_overrides(overrides["recipe"], overrides)
    if overrides.get("cache_dir"):
        overrides["cache_dir"] = str(Path(overrides["cache_dir"]).expanduser().resolve())
    return overrides


def settings_from_flags(fv: flags.FlagValues = FLAGS) -> BenchmarkSettings:
    """The :class:`~dltk_mm.benchmark.BenchmarkSettings` of parsed flags.

    Raises:
        ConfigurationError: an unknown preset or scheme, a bad value, malformed ``--folds`` /
            ``--seeds``.
    """
    preset = get_benchmark_preset(fv.preset)
    return BenchmarkSettings(
        results_dir=Path(fv.results_dir or Path("results") / preset.name), preset=preset,
        manifest=Path(fv.manifest) if fv.manifest else None,
        schemes=tuple(fv.schemes) if fv.schemes else None,
        folds=_ints(fv.folds, "folds"), seeds=_ints(fv.seeds, "seeds"),
        overrides=train_overrides(fv),
        phantoms_per_modality=fv.phantoms_per_modality, phantom_seed=fv.phantom_seed,
        inference_overrides=flag_fields.flag_values(fv, evaluation_specs(), only_present=True),
        weights=fv.weights, surface_metrics=fv.surface_metrics, max_runs=fv.max_runs,
        ablation=fv.ablation, ensemble=fv.ensemble,
    )


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _say(text: str) -> None:
    print(text, flush=True)


class RunReporter(TrainingCallback):
    """Prints a few lines per run's training (data, resume, loss every fifth of the steps)."""

    def __init__(self) -> None:
        self.every = 1
        self.steps = 0
        self.started = time.monotonic()

    def on_preprocess(self, done: int, total: int, volume: Any) -> None:
        if done == total:
            _say(f"    data: {total} volumes ready")

    def on_train_begin(self, info: Any) -> None:
        self.steps = info.config.steps
        self.every = max(1, self.steps // 5)
        self.started = time.monotonic()
        if info.resumed_from is not None:
            _say(f"    resuming from step {info.initial_step}")
        _say(f"    {info.num_parameters:,} parameters, lr {info.config.effective_learning_rate:g}"
             f", {self.steps} steps")

    def on_step_end(self, step: int, logs: Mapping[str, float]) -> None:
        if step % self.every == 0 or step == self.steps:
            _say(f"    step {step}/{self.steps} loss {logs.get('loss', math.nan):.4f} "
                 f"({time.monotonic() - self.started:.0f} s)")


def report_event(event: RunEvent) -> None:
    """Prints one line when a run starts or ends."""
    where = f"[{event.index}/{event.total}] {event.spec.name}"
    outcome = event.outcome
    if outcome is None:
        _say(f"{where}: start")
    elif outcome.status == "skipped":
        _say(f"{where}: finished earlier, skipped")
    elif outcome.status == "interrupted":
        _say(f"{where}: interrupted; rerun the same command to continue")
    elif outcome.status == "ablation":
        _say(f"{where}: ablation scored in {_duration(outcome.elapsed_s)}: {_dice(outcome)}")
    elif outcome.status == "ensemble":
        _say(f"[{event.index}/{event.total}] ensemble of {event.spec.scheme} fold "
             f"{event.spec.fold}: scored in {_duration(outcome.elapsed_s)}, mean Dice "
             f"{outcome.mean_dice:.3f}")
    elif outcome.status == "evaluated":
        _say(f"{where}: trained earlier, evaluated again in {_duration(outcome.elapsed_s)}, "
             f"mean Dice {_dice(outcome)}")
    else:
        eta = "" if event.eta_s is None else f", ETA {_duration(event.eta_s)}"
        _say(f"{where}: done in {_duration(outcome.elapsed_s)}, mean Dice "
             f"{_dice(outcome)}; {event.remaining} to go{eta}")


def _dice(outcome: RunOutcome) -> str:
    """``0.812 (paper), 0.834 (improved)``, or the one mean Dice."""
    if not outcome.protocol_dice:
        return f"{outcome.mean_dice:.3f}"
    return ", ".join(f"{value:.3f} ({name})" for name, value in outcome.protocol_dice.items())


def _print_table3(path: Path, title: str) -> None:
    frame = pd.read_csv(path)
    _say(f"\n{title}")
    for _, row in frame.iterrows():
        paper = "-" if not math.isfinite(row["paper"]) else f"{row['paper']:.3f}"
        difference = ("-" if not math.isfinite(row["difference"])
                      else f"{row['difference']:+.3f}")
        _say(f"  {row['scheme']:<11} {row['measured_mean']:.3f} ± {row['measured_std']:.3f}"
             f"   paper {paper}   difference {difference}")


def _print_ablation(path: Path) -> None:
    frame = pd.read_csv(path)
    _say("\nAblation: mean Dice (MR, CT, both; change of both from the paper's protocol), "
         "seconds per volume")
    for _, row in frame.iterrows():
        change = "-" if not math.isfinite(row["difference"]) else f"{row['difference']:+.3f}"
        _say(f"  {row['protocol']:<19} {row['scheme']:<11} {row['mr_mean']:.3f} "
             f"{row['ct_mean']:.3f} {row['both']:.3f} ({change})   "
             f"{row['seconds_per_volume']:.1f} s")


def print_summary(report: BenchmarkReport) -> None:
    """Prints Table 3 of each evaluation protocol beside the paper's numbers, the ablation and
    the files written."""
    table3 = report.files.get("table3_overall")
    if table3 is not None:
        _print_table3(table3, "Table 3, paper protocol: mean Dice over organs, MR and CT "
                              "averaged (measured vs paper)")
    improved = report.files.get("improved/table3_overall")
    if improved is not None:
        _print_table3(improved, "Table 3, improved protocol (the runs' own evaluation, "
                                "tables/improved/)")
    else:
        _say("\nimproved protocol: the same as the paper's (no --eval_* change and the runs "
             "validate as the paper): no separate tables")
    ensemble = report.files.get("ensemble/table3_overall")
    if ensemble is not None:
        _print_table3(ensemble, "Table 3, seed ensembles (tables/ensemble/)")
    if "ablation" in report.files:
        _print_ablation(report.files["ablation"])
    again = len(report.names("evaluated"))
    _say(f"\nfinished in {_duration(report.elapsed_s)}: {len(report.names('done'))} runs "
         f"trained now, " + (f"{again} evaluated again, " if again else "")
         + f"{len(report.names('skipped'))} skipped (finished earlier)")
    for name, path in report.files.items():
        _say(f"  {name}: {path}")


@handle_errors
def main(argv: list[str]) -> int:
    """Runs the benchmark per the flags; returns the exit status."""
    del argv
    settings = settings_from_flags(FLAGS)
    _say(f"benchmark: {settings.preset.name} preset into {settings.results_dir}")
    report = run_benchmark(settings, callbacks=[RunReporter()],
                           aggregate_only=FLAGS.aggregate_only, progress=report_event)
    if report.interrupted_by is not None:
        return interrupted_status(report.interrupted_by)
    if not report.files:
        _say("no finished run yet: nothing to tabulate")
        return 0
    print_summary(report)
    return 0


def run() -> None:
    """Console-script entry point (``dltk-mm-benchmark``)."""
    define_flags(FLAGS)
    run_command(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
