"""What every dltk_mm command line shares: exit statuses, error handling, progress bar, tables.

Command lines print progress and summaries to stdout; library code only logs (absl.logging).

Exit status, the same for every ``dltk-mm-*`` command (:func:`run_command` implements it):

====  ======================================================================================
0     done (or nothing left to do)
1     an unexpected failure: a bug or an environment problem, with a Python traceback
2     bad input or bad options: unknown or malformed flags, a missing required flag, positional
      arguments, bad input data (one line ``error: ...`` naming the file and the fix, no
      traceback); nothing was written
130   stopped by SIGINT (Ctrl-C); 143 stopped by SIGTERM (128 + the signal's number)
====  ======================================================================================

Fast refusals (the pattern every command follows): keep the module's top level light - absl,
the flag definitions and the option lists they need - and import whatever pulls in TensorFlow
(networks, training, inference, export) inside ``main`` *after* the flags, the manifest and the
output paths are checked, so that bad input is reported in well under a second instead of after
TensorFlow's start-up::

    @handle_errors
    def main(argv):
        inputs = check_inputs_and_outputs()           # numpy/SimpleITK only: fails fast
        from dltk_mm.inference.predict import run     # imports TensorFlow
        return run(inputs)

    def run():
        run_command(main)

:func:`tensorflow_imported` lets a test check that a command's module stays light.
"""

from __future__ import annotations

import functools
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from absl import app, flags, logging

from dltk_mm.errors import ConfigurationError, DltkMmError

#: Done.
EXIT_OK = 0
#: An unexpected failure (a bug): Python's own status for an uncaught exception.
EXIT_FAILURE = 1
#: Stopped by bad input or options (a clear message, no traceback, nothing written).
EXIT_BAD_INPUT = 2
#: Exit status after SIGINT / SIGTERM (the shell convention 128 + signal number).
EXIT_INTERRUPTED: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM (see :func:`run_command`); ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def interrupted_status(signum: int) -> int:
    """The exit status of a command stopped by signal ``signum`` (130 SIGINT, 143 SIGTERM)."""
    return EXIT_INTERRUPTED.get(signum, 128 + int(signum))


class ProgressBar:
    """A text progress bar on stdout: ``[#####-----] 3/9 label``.

    On a terminal the bar is redrawn in place with a carriage return; in anything else (a log
    file, a pipe) one plain line per update, without ``\\r`` or ANSI escape codes.
    """

    def __init__(self, total: int, width: int = 30, stream: TextIO | None = None,
                 prefix: str = "") -> None:
        self.total = max(int(total), 1)
        self.width = width
        self.stream = stream if stream is not None else sys.stdout
        self.prefix = prefix
        self.done = 0
        self._interactive = _is_terminal(self.stream)
        self._drawn = 0

    def render(self, done: int, text: str = "") -> str:
        """The bar's text for ``done`` steps."""
        filled = int(round(self.width * min(done, self.total) / self.total))
        bar = "#" * filled + "-" * (self.width - filled)
        return f"{self.prefix}[{bar}] {done}/{self.total} {text}".rstrip()

    def update(self, done: int | None = None, text: str = "") -> None:
        """Advances to ``done`` (default: one more step) and redraws."""
        self.done = self.done + 1 if done is None else int(done)
        line = self.render(self.done, text)
        if self._interactive:
            # Spaces, not an ANSI erase code, clear what is left of a longer previous line.
            self.stream.write("\r" + line.ljust(self._drawn))
            self._drawn = len(line)
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table with left-aligned columns."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def fail(message: str, status: int = EXIT_BAD_INPUT) -> None:
    """Prints ``error: message`` to stderr and exits with ``status`` (no traceback)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(status)


def handle_errors(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """Wraps an absl ``main`` with the exit-status convention of the module docstring.

    Positional arguments and a :class:`~dltk_mm.errors.DltkMmError` exit 2 with a one-line
    message; Ctrl-C (or SIGTERM under :func:`run_command`) exits 130 (143). Library logs are
    shown from warnings up unless ``--verbosity`` is given.
    """

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> Any:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected positional arguments: {argv[1:]}; use --flags",
                                 exitcode=EXIT_BAD_INPUT)
        previous_verbosity = logging.get_verbosity()
        if "verbosity" in flags.FLAGS and not flags.FLAGS["verbosity"].present:
            # The command's own output says what happens; library logs from warnings up
            # (--verbosity=0 shows the informational ones too).
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except DltkMmError as error:
            fail(str(error))
        except KeyboardInterrupt as error:
            signum = getattr(error, "signum", signal.SIGINT)
            fail(f"stopped by {signal.Signals(signum).name}", interrupted_status(signum))
        finally:
            logging.set_verbosity(previous_verbosity)
        return None

    return wrapped


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing whose errors exit :data:`EXIT_BAD_INPUT` (absl's own exits 1)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        message = str(error)
        if "\n" in message:
            message = "\n" + textwrap.indent(message, "  ")
        sys.stderr.write(f"error: {message}\nPass --helpshort or --helpfull to see the flags.\n")
        sys.stderr.flush()
        sys.exit(EXIT_BAD_INPUT)


def _raise_interrupted(signum: int, frame: object) -> None:
    del frame
    raise Interrupted(signum)


def run_command(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """``absl.app.run`` with the exit statuses of the module docstring (use it in ``run()``).

    Flag errors exit 2 (not absl's 1); SIGTERM raises :class:`Interrupted` in the main thread,
    which :func:`handle_errors` turns into exit 143 (a command that must save state first, like
    training, installs its own handler while it runs).
    """
    signal.signal(signal.SIGTERM, _raise_interrupted)
    app.run(main, argv=argv, flags_parser=parse_flags)


def tensorflow_imported() -> bool:
    """Whether TensorFlow has been imported in this process (for tests of fast refusals)."""
    return "tensorflow" in sys.modules


def check_distinct_runs(model_dirs: Sequence[str]) -> None:
    """Refuses a ``--model_dir`` repeated with the same run (an ensemble averages distinct runs).

    Raises:
        ConfigurationError: naming the repeated folders.
    """
    if len(set(model_dirs)) < len(model_dirs):
        raise ConfigurationError(f"--model_dir names a run twice ({list(model_dirs)}); an "
                                 "ensemble averages distinct runs")


def require_flags(*names: str) -> None:
    """Marks flags as required (a missing one is a flag error: exit 2 under run_command)."""
    for name in names:
        flags.mark_flag_as_required(name)


def validate_positive(name: str, allow_zero: bool = False) -> None:
    """Registers a validator: the numeric flag ``name`` must be > 0 (or >= 0)."""

    def check(value: float | None) -> bool:
        return value is None or (value >= 0 if allow_zero else value > 0)

    flags.register_validator(
        name, check, message=f"--{name} must be {'>= 0' if allow_zero else '> 0'}")
