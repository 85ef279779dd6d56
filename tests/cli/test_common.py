"""dltk_mm.cli._common: the exit statuses every command shares, and the progress bar."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest

from dltk_mm.cli._common import EXIT_BAD_INPUT, ProgressBar, handle_errors
from dltk_mm.errors import InputDataError
from tests.conftest import REPO_ROOT

# A command in the pattern of the module docstring; its behaviour comes from --what.
COMMAND = textwrap.dedent("""
    import os, signal, sys, time
    from absl import flags
    from dltk_mm.cli._common import handle_errors, run_command
    from dltk_mm.errors import InputDataError

    flags.DEFINE_enum("what", "ok", ["ok", "bad_input", "sigint", "sigterm", "bug"], "")
    flags.DEFINE_integer("count", None, "", lower_bound=1)
    flags.mark_flag_as_required("count")

    @handle_errors
    def main(argv):
        what = flags.FLAGS.what
        if what == "bad_input":
            raise InputDataError("x.nii.gz: broken; re-save it")
        if what in ("sigint", "sigterm"):
            os.kill(os.getpid(), signal.SIGINT if what == "sigint" else signal.SIGTERM)
            time.sleep(30)
        if what == "bug":
            raise RuntimeError("a bug")
        print("done")
        return 0

    run_command(main)
""")


def _command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", COMMAND, *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


@pytest.mark.parametrize(("args", "status", "message"), [
    (["--count=3"], 0, None),
    (["--count=3", "--what=bad_input"], 2, "error: x.nii.gz: broken; re-save it"),
    (["--count=0"], 2, "error: "),                 # a flag's bound
    ([], 2, "--count"),                            # a missing required flag
    (["--count=1", "--nope"], 2, "nope"),          # an unknown flag
    (["--count=1", "extra"], 2, "unexpected positional arguments"),
    (["--count=1", "--what=sigint"], 130, "stopped by SIGINT"),
    (["--count=1", "--what=sigterm"], 143, "stopped by SIGTERM"),
    (["--count=1", "--what=bug"], 1, "RuntimeError: a bug"),  # a bug keeps its traceback
])
def test_exit_status_convention(args, status, message):
    result = _command(*args)
    assert result.returncode == status, result.stderr[-2000:]
    if message is not None:
        assert message in result.stderr
    assert ("Traceback" in result.stderr) == (status == 1)


def test_handle_errors_in_process():
    @handle_errors
    def main(argv):
        raise InputDataError("broken")

    with pytest.raises(SystemExit) as stop:
        main(["command"])
    assert stop.value.code == EXIT_BAD_INPUT


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_writes_plain_lines_where_the_output_is_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(3, width=6, stream=stream)
    for name in ("a", "bb", "c"):
        bar.update(text=name)
    text = stream.getvalue()
    assert text.splitlines() == ["[##----] 1/3 a", "[####--] 2/3 bb", "[######] 3/3 c"]
    assert "\r" not in text and "\x1b" not in text


def test_progress_bar_redraws_in_place_on_a_terminal_without_ansi_codes():
    stream = _Terminal()
    bar = ProgressBar(2, width=4, stream=stream)
    bar.update(text="longer name")
    bar.update(text="x")
    text = stream.getvalue()
    assert "\x1b" not in text
    assert text == "\r[##--] 1/2 longer name" + "\r" + "[####] 2/2 x".ljust(22) + "\n"
