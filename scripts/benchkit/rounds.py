"""Interleaved rounds: the method that makes figures comparable on a VM
whose speed drifts by tens of percent over minutes.

A plan is a list of named measurements.  Each round runs every measurement
once, in plan order; ratios (CPU per message against a reference measurement)
are taken within a round, where the machine was in the same state, and the
summary gives the median over rounds of those ratios, next to the medians of
the raw figures.
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from .window import Row

__all__ = ["Measure", "interleave", "summarise"]

Measure = Callable[[], Awaitable[Row]]
MEDIANS = ("msg_per_s", "cpu_us_per_msg", "server_cpu_util", "client_cpu_util", "latency_p50_ms", "latency_p99_ms",
           "send_rtt_p50_ms", "send_rtt_p99_ms", "replay_msg_per_s")


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


async def interleave(
    plan: Sequence[tuple[str, Measure]],
    rounds: int,
    ratio_to: Sequence[str] = (),
    stamp: Row | None = None,
    latency_delta: bool = False,
) -> AsyncIterator[Row]:
    """Run ``plan`` ``rounds`` times, yielding each row (with its ``round``
    and the ``stamp`` fields) as it comes, then, when there was more than one
    measurement, one ``"summary": true`` row per label (see ``summarise``)."""
    rows: list[Row] = []
    for r in range(1, rounds + 1):
        for label, measure in plan:
            row = {**(stamp or {}), **await measure(), "label": label, "round": r}
            rows.append(row)
            yield row
    if len(rows) > 1:
        for row in summarise(rows, [label for label, _ in plan], ratio_to or [plan[0][0]], latency_delta):
            yield {**(stamp or {}), **row}


def summarise(rows: list[Row], labels: Sequence[str], ratio_to: Sequence[str], latency_delta: bool = False) -> list[Row]:
    """One summary row per label: medians over rounds of ``MEDIANS`` and, for
    each reference label R present, ``ratio_to_R`` = median over rounds of
    (this label's CPU per message / R's in the same round), with the per-round
    values in ``ratio_to_R_rounds``; with ``latency_delta`` also
    ``latency_p50_added_ms_vs_R`` (median of within-round differences)."""
    by_round: dict[tuple[str, int], Row] = {(r["label"], r["round"]): r for r in rows}
    out = []
    for label in dict.fromkeys(labels):
        mine = [r for r in rows if r["label"] == label]
        summary: Row = {"summary": True, "label": label, "rounds": len(mine)}
        for key in MEDIANS:
            value = _median([float(r[key]) for r in mine if r.get(key) is not None])
            if value is not None:
                summary[key] = value
        for ref in ratio_to:
            if ref == label:
                continue
            pairs = [(r, by_round.get((ref, r["round"]))) for r in mine]
            ratios = [round(r["cpu_us_per_msg"] / b["cpu_us_per_msg"], 3) for r, b in pairs
                      if b is not None and r.get("cpu_us_per_msg") and b.get("cpu_us_per_msg")]
            if ratios:
                summary[f"ratio_to_{ref}"] = _median(ratios)
                summary[f"ratio_to_{ref}_rounds"] = ratios
            if latency_delta:
                deltas = [r["latency_p50_ms"] - b["latency_p50_ms"] for r, b in pairs
                          if b is not None and "latency_p50_ms" in r and "latency_p50_ms" in b]
                if deltas:
                    summary[f"latency_p50_added_ms_vs_{ref}"] = _median(deltas)
        out.append(summary)
    return out
