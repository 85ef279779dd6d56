"""Small helpers shared by the dltk_mm command lines: progress bar, tables, flag checks, errors.

Command lines print progress and summaries to stdout; library code only logs (absl.logging).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from absl import app, flags, logging

from dltk_mm.errors import DltkMmError

#: exit status of a command stopped by bad input or options (a clear message, no traceback)
EXIT_BAD_INPUT = 2


class ProgressBar:
    """A text progress bar on stdout: ``[#####-----] 3/9 label``.

    On a terminal the bar is redrawn in place; otherwise (logs, pipes) one line per update.
    """

    def __init__(self, total: int, width: int = 30, stream: TextIO | None = None,
                 prefix: str = "") -> None:
        self.total = max(int(total), 1)
        self.width = width
        self.stream = stream if stream is not None else sys.stdout
        self.prefix = prefix
        self.done = 0
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())

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
            self.stream.write("\r\033[K" + line)
            if self.done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


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
    """Wraps an absl ``main``: quiet library logs, and a DltkMmError becomes a message + exit 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> Any:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected positional arguments: {argv[1:]}; use --flags")
        previous_verbosity = logging.get_verbosity()
        if not flags.FLAGS["verbosity"].present:
            # The command's own output says what happens; library logs from warnings up
            # (--verbosity=0 shows the informational ones too).
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except DltkMmError as error:
            fail(str(error))
        finally:
            logging.set_verbosity(previous_verbosity)
        return None

    return wrapped


def require_flags(*names: str) -> None:
    """Marks flags as required (absl prints a usage error when one is missing)."""
    for name in names:
        flags.mark_flag_as_required(name)


def validate_positive(name: str, allow_zero: bool = False) -> None:
    """Registers a validator: the numeric flag ``name`` must be > 0 (or >= 0)."""

    def check(value: float | None) -> bool:
        return value is None or (value >= 0 if allow_zero else value > 0)

    flags.register_validator(
        name, check, message=f"--{name} must be {'>= 0' if allow_zero else '> 0'}")
