"""The checker's printed verdict: one table row per guarantee, anomalies per
fault, and examples of each broken promise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .analysis import Analysis, Row

__all__ = ["render"]

_COLUMNS = ("guarantee", "acked", "lost", "dup", "reorder", "phantom", "other", "lost@fault", "reorder@change",
            "verdict")


def render(analysis: Analysis, say: Callable[[str], None]) -> None:
    """Print the verdict table, the faults with what happened around each,
    and up to eight examples per broken guarantee."""
    rows = [_cells(row) for row in analysis.rows]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(_COLUMNS)]
    line = "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(_COLUMNS))
    say(line)
    say("-" * len(line))
    for cells in rows:
        say("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)))
    for row in analysis.rows:
        for note in row.notes:
            say(f"  {row.guarantee}: {note}")
    _faults(analysis, say)
    for row in analysis.rows:
        if row.broken or row.examples:
            say(f"\n{row.guarantee} — {'BROKEN' if row.broken else 'examples'}:")
            for example in row.examples:
                say(f"  {example}")


def _cells(row: Row) -> list[str]:
    verdict = "BROKEN" if row.broken else "kept"
    return [row.guarantee, str(row.messages), str(row.lost), str(row.dup), str(row.reorder), str(row.phantom),
            str(row.other), str(row.excused), str(row.reorder_ring + row.reorder_giveback), verdict]


def _faults(analysis: Analysis, say: Callable[[str], None]) -> None:
    if not analysis.faults:
        return
    say("\nfaults (anomalies counted against the fault around them or the next one):")
    for number, fault in sorted(analysis.faults.items()):
        begin = fault.get("begin", {})
        end = fault.get("end", {})
        counts = analysis.attributed.get(number, {})
        told = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"
        mode = f" ({begin.get('mode')})" if begin.get("mode") else ""
        span = f"{begin.get('t', 0):8.2f}s → {end.get('recovered', 0):8.2f}s"
        say(f"  #{number:<3} {span}  {fault.get('kind', '?'):9} {fault.get('node', '?'):4}{mode:12} {told}")
    quiet = analysis.attributed.get(None, {})
    if quiet:
        say(f"  after the last fault: {', '.join(f'{k} {v}' for k, v in sorted(quiet.items()))}")


def summary(analysis: Analysis) -> dict[str, Any]:
    """The verdict as one JSON-able object (for scripts and tests)."""
    return {
        "broken": analysis.broken,
        "rows": [
            {"guarantee": r.guarantee, "acked": r.messages, "lost": r.lost, "dup": r.dup, "reorder": r.reorder,
             "phantom": r.phantom, "other": r.other, "lostAtFault": r.excused, "lostAtFaultByKind": r.excused_by, "reorderAtRingChange": r.reorder_ring,
             "reorderAtGiveBack": r.reorder_giveback, "broken": r.broken,
             "notes": r.notes, "examples": r.examples}
            for r in analysis.rows
        ],
        "faults": {str(n): dict(c) for n, c in analysis.attributed.items()},
    }
