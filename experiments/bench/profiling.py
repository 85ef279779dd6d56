"""Reading TensorFlow profiler traces: self time per op type and per layer.

Used by experiments/bench/profile_step.py; kept free of flags so that tests can import it.
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from experiments.bench.report import markdown_table


def op_self_times(logdir: str | os.PathLike) -> list[tuple[str, str, float]]:
    """``(op type, op name, self time in s)`` per op from the newest trace under ``logdir``.

    Uses the profiler's own conversion of the trace to its "framework op stats" table (the data
    behind TensorBoard's TensorFlow-stats page).
    """
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    traces = sorted(Path(logdir).glob("plugins/profile/*/*.xplane.pb"))
    if not traces:
        raise FileNotFoundError(f"no profiler trace under {logdir}")
    data, ok = plugin.xspace_to_tools_data([str(traces[-1])], "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"the profiler could not read {traces[-1]}")
    table = json.loads(data)[0]
    columns = [c["id"] for c in table["cols"]]
    rows = [dict(zip(columns, [cell.get("v") for cell in row["c"]], strict=False))
            for row in table["rows"]]
    return [(r["type"], r["operation"], r["total_self_time"] / 1e6) for r in rows
            if r["type"] != "IDLE"]


def layer_of(op_name: str) -> str:
    """``.../stream_ct_1/enc1_unit0_conv0_ct_1/...`` -> ``enc1_unit0_conv0`` (or the op name)."""
    parts = [p for p in op_name.split("/") if not p.startswith(("branch", "_", "switch_case",
                                                                "indexed_case", "gradient_tape",
                                                                "stream_"))]
    name = parts[0] if parts else op_name
    return re.sub(r"_(mr|ct)?_?\d*$", "", name)


def self_time_tables(ops: Sequence[tuple[str, str, float]], top: int = 15) -> str:
    """Markdown tables of the self time per op type and per (op type, layer), largest first."""
    total = sum(t for _, _, t in ops) or 1.0
    by_type: collections.Counter[str] = collections.Counter()
    by_layer: collections.Counter[tuple[str, str]] = collections.Counter()
    for op_type, name, seconds in ops:
        by_type[op_type] += seconds
        by_layer[(op_type, layer_of(name))] += seconds
    by_type_table = markdown_table(
        ["op type", "self time s", "share"],
        [(op_type, f"{seconds:.3f}", f"{seconds / total:.1%}")
         for op_type, seconds in by_type.most_common(top)])
    by_layer_table = markdown_table(
        ["op type", "layer (both modalities)", "self time s", "share"],
        [(op_type, layer, f"{seconds:.3f}", f"{seconds / total:.1%}")
         for (op_type, layer), seconds in by_layer.most_common(top)])
    return f"\n{by_type_table}\n\n{by_layer_table}"


__all__ = ["layer_of", "op_self_times", "self_time_tables"]
