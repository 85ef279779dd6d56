"""The paper's flagfiles (experiments/paper/*.cfg, for dltk-mm-train --flagfile) give exactly the
configuration the benchmark's ``paper`` preset plans for each scheme."""

from __future__ import annotations

import pytest

from dltk_mm.benchmark.plan import BenchmarkSettings, run_config
from dltk_mm.benchmark.presets import AVAILABLE_SCHEMES, get_benchmark_preset
from dltk_mm.training.config_flags import config_from_args
from tests.conftest import REPO_ROOT

PAPER_DIR = REPO_ROOT / "experiments" / "paper"


def test_every_scheme_has_a_flagfile_and_no_other_exists() -> None:
    stems = {path.stem for path in PAPER_DIR.glob("*.cfg")}
    assert stems == {"common", *AVAILABLE_SCHEMES}


@pytest.mark.parametrize("scheme", AVAILABLE_SCHEMES)
def test_flagfiles_give_the_paper_presets_configuration(tmp_path, scheme: str) -> None:
    manifest = tmp_path / "manifest.csv"
    from_files = config_from_args([
        f"--flagfile={PAPER_DIR / 'common.cfg'}", f"--flagfile={PAPER_DIR / f'{scheme}.cfg'}",
        f"--manifest={manifest}", "--fold=1", "--seed=2"])
    settings = BenchmarkSettings(results_dir=tmp_path / "results",
                                 preset=get_benchmark_preset("paper"))
    planned = run_config(settings, scheme, 1, 2, manifest)
    differences = from_files.differences(planned)
    # the benchmark's own cache folder is the only difference (not a setting of the paper)
    assert set(differences) == {"cache_dir"}, differences
    assert from_files.scheme == scheme
