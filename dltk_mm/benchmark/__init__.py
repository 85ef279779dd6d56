"""dltk_mm.benchmark: the paper's experiment as library code (Valindria et al., WACV 2018).

* :mod:`~dltk_mm.benchmark.presets`: the presets (data overriding TrainConfig fields);
* :mod:`~dltk_mm.benchmark.plan`: which runs (scheme x fold x seed) and their configurations;
* :mod:`~dltk_mm.benchmark.data`: the manifest, or built-in phantoms;
* :mod:`~dltk_mm.benchmark.execute` and :mod:`~dltk_mm.benchmark.evaluate`: train, skip finished
  runs, evaluate the held-out fold through the one segmentation path, scored in the label's own
  geometry;
* :mod:`~dltk_mm.benchmark.protocols`: the evaluation protocols (``paper``, ``improved``, the
  ablation's);
* :mod:`~dltk_mm.benchmark.aggregate`, :mod:`~dltk_mm.benchmark.tables`,
  :mod:`~dltk_mm.benchmark.figures`, :mod:`~dltk_mm.benchmark.paper_results`: Tables 1-3 and
  Figures 4-7 beside the paper's numbers;
* :mod:`~dltk_mm.benchmark.driver`: all of it in one call (:func:`run_benchmark`).

The command line is ``dltk-mm-benchmark`` (:mod:`dltk_mm.cli.benchmark`).
"""

from dltk_mm.benchmark.aggregate import aggregate, load_results
from dltk_mm.benchmark.driver import BenchmarkReport, run_benchmark
from dltk_mm.benchmark.execute import (
    RunEvent,
    RunOutcome,
    ablation_results,
    check_finished,
    run_one,
)
from dltk_mm.benchmark.plan import BenchmarkSettings, RunSpec, plan_runs, run_config
from dltk_mm.benchmark.presets import (
    ALL_SCHEMES,
    AVAILABLE_SCHEMES,
    BENCHMARK_PRESETS,
    CODE_SCHEMES,
    BenchmarkPreset,
    get_benchmark_preset,
)

__all__ = [
    "ALL_SCHEMES",
    "AVAILABLE_SCHEMES",
    "BENCHMARK_PRESETS",
    "CODE_SCHEMES",
    "BenchmarkPreset",
    "BenchmarkReport",
    "BenchmarkSettings",
    "RunEvent",
    "RunOutcome",
    "RunSpec",
    "ablation_results",
    "aggregate",
    "check_finished",
    "get_benchmark_preset",
    "load_results",
    "plan_runs",
    "run_benchmark",
    "run_config",
    "run_one",
]
