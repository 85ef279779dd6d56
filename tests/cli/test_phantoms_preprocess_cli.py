"""The dltk-mm-phantoms and dltk-mm-preprocess commands, run as real subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _command(script: str, module: str) -> list[str]:
    """The installed console script, else the module run by this interpreter."""
    beside = Path(sys.executable).with_name(script)
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(script)
    return [found] if found else [sys.executable, "-m", module]


PHANTOMS = _command("dltk-mm-phantoms", "dltk_mm.cli.phantoms")
PREPROCESS = _command("dltk-mm-preprocess", "dltk_mm.cli.preprocess")


def _run(command: list[str], *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300,
                          env=env, check=False)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "phantoms"
    result = _run(PHANTOMS, f"--output_dir={out}", "--num_ct=2", "--num_mr=1", "--seed=7")
    assert result.returncode == 0, result.stderr
    assert "[##############################] 3/3" in result.stdout
    assert "phantom_mr_000" in result.stdout and "3 phantom volumes" in result.stdout
    return out


def test_phantoms_then_preprocess_twice_hits_cache(phantom_dir: Path, tmp_path: Path) -> None:
    manifest = phantom_dir / "manifest.csv"
    assert manifest.read_text().startswith("subject_id,modality,image,label")
    cache = tmp_path / "cache"
    first = _run(PREPROCESS, f"--manifest={manifest}", f"--cache_dir={cache}")
    assert first.returncode == 0, first.stderr
    assert "3/3" in first.stdout and "spacing mm" in first.stdout
    table = [line for line in first.stdout.splitlines() if line.startswith("phantom_")]
    assert len(table) == 3 and all(line.split()[-1] == "miss" for line in table)
    assert all(line.split()[3] == "2x2x2" for line in table)
    assert len(list(cache.glob("*.npz"))) == 3 and len(list(cache.glob("*.json"))) == 3
    second = _run(PREPROCESS, f"--manifest={manifest}", f"--cache_dir={cache}", "--verbosity=0")
    assert second.returncode == 0, second.stderr
    table = [line for line in second.stdout.splitlines() if line.startswith("phantom_")]
    assert all(line.split()[-1] == "hit" for line in table)
    assert "3 cache hit(s), 0 computed" in second.stdout
    assert "cache hit" in second.stderr  # the library log line, shown with --verbosity=0
    # other options through a flag file: a new cache entry per volume
    flagfile = tmp_path / "flags.cfg"
    flagfile.write_text(f"--manifest={manifest}\n--cache_dir={cache}\n--spacing_mm=3\n"
                        "--normalisation=per_slice\n--crop_margin_mm=6\n--ct_clip_min=none\n"
                        "--normalisation_region=organ_crop\n")
    third = _run(PREPROCESS, f"--flagfile={flagfile}")
    assert third.returncode == 0, third.stderr
    assert "3x3x3" in third.stdout and "0 cache hit(s)" in third.stdout
    assert len(list(cache.glob("*.npz"))) == 6


def test_preprocess_bad_input_exits_cleanly(phantom_dir: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "bad.csv"
    missing = tmp_path / "missing_scan.nii.gz"
    manifest.write_text("subject_id,modality,image,label\n"
                        f"s1,ct,{phantom_dir / 'images' / 'phantom_ct_000.nii.gz'},"
                        f"{phantom_dir / 'labels' / 'phantom_ct_001.nii.gz'}\n"
                        f"s2,ct,{missing},\n")
    result = _run(PREPROCESS, f"--manifest={manifest}", f"--cache_dir={tmp_path / 'c'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: manifest") or "error: manifest" in result.stderr
    assert str(missing) in result.stderr and "line 3 (subject s2)" in result.stderr
    assert "different grids" in result.stderr and "line 2 (subject s1)" in result.stderr
    unknown = _run(PREPROCESS, f"--manifest={phantom_dir / 'manifest.csv'}",
                   f"--cache_dir={tmp_path / 'c'}", "--modalities=ct")
    assert unknown.returncode == 2 and "unknown modality 'mr'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    labels = _run(PREPROCESS, f"--manifest={phantom_dir / 'manifest.csv'}",
                  f"--cache_dir={tmp_path / 'c'}", "--label_preset=chaos")
    assert labels.returncode == 2 and "not ids of the 'chaos' preset" in labels.stderr
    assert "phantom_ct_000.nii.gz" in labels.stderr and "Traceback" not in labels.stderr


def test_flags_help_and_required(tmp_path: Path) -> None:
    helpfull = _run(PREPROCESS, "--helpfull")  # absl prints the usage and exits with 1
    assert "Traceback" not in helpfull.stderr
    assert "--spacing_mm" in helpfull.stdout and "--normalisation" in helpfull.stdout
    assert "--flagfile" in helpfull.stdout
    # every PreprocessingConfig field is a flag, with the dataclass's default
    assert "--normalisation_region" in helpfull.stdout and "--std_epsilon" in helpfull.stdout
    assert "(default: '10.0')" in helpfull.stdout.split("--crop_margin_mm:")[1].split("--")[0]
    # Flag errors exit 2 like bad input (absl's own status would be 1), without a traceback.
    missing = _run(PREPROCESS, f"--cache_dir={tmp_path}")
    assert missing.returncode == 2 and "manifest" in missing.stderr
    bad_value = _run(PREPROCESS, f"--manifest={tmp_path / 'm.csv'}", f"--cache_dir={tmp_path}",
                     "--spacing_mm=0")
    assert bad_value.returncode == 2 and "spacing_mm" in bad_value.stderr
    unknown = _run(PREPROCESS, f"--manifest={tmp_path / 'm.csv'}", "--spacing=2")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    positional = _run(PREPROCESS, f"--manifest={tmp_path / 'm.csv'}", "extra.csv")
    assert positional.returncode == 2 and "positional" in positional.stderr
    phantoms_help = _run(PHANTOMS, "--helpfull")
    assert "--num_ct" in phantoms_help.stdout and "--[no]overwrite" in phantoms_help.stdout


def test_phantoms_refuses_foreign_folder(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("do not touch")
    refused = _run(PHANTOMS, f"--output_dir={folder}", "--num_ct=1", "--num_mr=0")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "not empty" in refused.stderr and "--overwrite" in refused.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]
    forced = _run(PHANTOMS, f"--output_dir={folder}", "--num_ct=1", "--num_mr=0", "--overwrite")
    assert forced.returncode == 0, forced.stderr
    assert (folder / "thesis.tex").read_text() == "do not touch"
    assert (folder / "manifest.csv").is_file()


def test_preprocess_never_imports_tensorflow(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from dltk_mm.cli import preprocess\n"
        "from dltk_mm.cli._common import tensorflow_imported\n"
        "preprocess.FLAGS([sys.argv[0], f'--manifest={sys.argv[1]}'])\n"
        "try:\n"
        "    preprocess.main([sys.argv[0]])\n"
        "except SystemExit as stop:\n"
        "    print('exit', stop.code, 'tensorflow', tensorflow_imported())\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "missing.csv")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert "exit 2 tensorflow False" in result.stdout, result.stderr[-3000:]
    assert "missing.csv" in result.stderr
