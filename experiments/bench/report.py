"""Markdown tables and child-process results of the benchmarks (experiments/bench/README.md)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: the header, its separator and one line per row (cells as ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def run_result(command: Sequence[str], timeout: float | None = None) -> dict:
    """Runs a benchmark child process that prints ``RESULT {json}`` and returns that dict.

    Each measurement runs in its own process (its own peak RSS, no state of an earlier one).

    Returns:
        The child's result, or ``{"error": ..., "timed_out": bool}`` when it ran past
        ``timeout`` seconds or failed (the last line of its stderr).
    """
    try:
        completed = subprocess.run(list(command), capture_output=True, text=True,
                                   timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within {timeout:g} s", "timed_out": True}
    if completed.returncode != 0 or "RESULT " not in completed.stdout:
        lines = completed.stderr.strip().splitlines() or ["no output"]
        return {"error": f"exit code {completed.returncode}: {lines[-1][:300]}",
                "timed_out": False}
    return json.loads(completed.stdout.split("RESULT ", 1)[1].splitlines()[0])


__all__ = ["markdown_table", "run_result"]
