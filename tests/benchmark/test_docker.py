"""The Dockerfile (cannot be built here): pinned base image, installs the package, runs the
benchmark with the paper preset on /data, writing to /results; setup.py installs dltk_mm only, with
a console script for every command."""

from __future__ import annotations

import ast
import importlib
import json
import re

from tests.conftest import REPO_ROOT


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO_ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def setup_call() -> ast.Call:
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    return next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")


def setup_keyword(name: str) -> object:
    keyword = next(k for k in setup_call().keywords if k.arg == name)
    return ast.literal_eval(keyword.value)


def test_base_image_is_the_tensorflow_gpu_image_pinned_like_setup_py() -> None:
    instructions = dockerfile_instructions()
    args = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG"
                and "=" in rest)
    version = args["TENSORFLOW_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    pin = next(r for r in setup_keyword("install_requires") if r.startswith("tensorflow"))
    match = re.fullmatch(r"tensorflow==(\d+)\.(\d+)\.\*", pin)
    assert match, f"setup.py should pin tensorflow==X.Y.*, has {pin}"
    assert version.split(".")[:2] == [match.group(1), match.group(2)]
    first = next(rest for keyword, rest in instructions if keyword == "FROM")
    assert first == "tensorflow/tensorflow:${TENSORFLOW_VERSION}-gpu"
    # the ARG comes before FROM so that it can be used there
    kinds = [keyword for keyword, _ in instructions]
    assert kinds.index("ARG") < kinds.index("FROM")


def test_image_installs_the_package_and_runs_the_paper_benchmark() -> None:
    instructions = dockerfile_instructions()
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install" in runs and " ." in runs
    assert "from experiments" not in runs  # experiments/ is not an installed package
    assert "from dltk_mm.cli.benchmark import run" in runs
    copied = " ".join(rest for keyword, rest in instructions if keyword == "COPY")
    for needed in ("setup.py", "dltk_mm"):
        assert needed in copied
    entrypoint = json.loads(next(rest for keyword, rest in instructions
                                 if keyword == "ENTRYPOINT"))
    command = json.loads(next(rest for keyword, rest in instructions if keyword == "CMD"))
    full = entrypoint + command
    assert full[0] == "dltk-mm-benchmark"
    assert "--preset=paper" in full
    assert "--manifest=/data/manifest.csv" in full
    assert "--results_dir=/results" in full
    assert "/data" in " ".join(rest for keyword, rest in instructions if keyword == "VOLUME")


def test_every_console_script_exists_and_benchmark_is_the_library_command() -> None:
    scripts = dict(s.split("=", 1) for s in setup_keyword("entry_points")["console_scripts"])
    assert scripts["dltk-mm-benchmark"] == "dltk_mm.cli.benchmark:run"
    assert scripts["dltk-mm-manifest"] == "dltk_mm.cli.manifest:run"
    for name, target in scripts.items():  # read, not imported: some commands define flags then
        module, _, function = target.partition(":")
        assert module.startswith("dltk_mm.cli."), name
        tree = ast.parse((REPO_ROOT / f"{module.replace('.', '/')}.py").read_text())
        assert function in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, name
    assert callable(importlib.import_module("dltk_mm.cli.benchmark").run)


def test_setup_installs_no_top_level_experiments_package() -> None:
    from setuptools import find_packages

    packages = next(k for k in setup_call().keywords if k.arg == "packages").value
    include = ast.literal_eval(next(k for k in packages.keywords if k.arg == "include").value)
    found = find_packages(where=str(REPO_ROOT), include=include)
    assert "dltk_mm" in found and "dltk_mm.benchmark" in found
    assert {name.split(".")[0] for name in found} == {"dltk_mm"}
    assert "package_data" not in {k.arg for k in setup_call().keywords}


def test_dockerignore_keeps_results_and_git_out() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and "results" in ignored
