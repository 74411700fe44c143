"""Where a search's wall time goes in ``benchmarks/bench_service.py`` (in-process server): the stages the search
fronts (``server/search_front.SearchFront.timings``) and the query batcher (``textual/batching.QueryBatcher.timings``)
record while a run is measured, one line per run."""

from __future__ import annotations

from typing import Any

from .common import pct


def stages_start(mos: Any, fronts: list[Any], children: list[Any]) -> dict[str, Any]:
    """Start recording where each search's wall time goes (search_front / batching timings; in-process server)."""
    batcher = getattr(mos.embedder, "batcher", None)
    for front in fronts:
        front.timings = []
    if batcher is not None:
        batcher.timings = []
    return {"fronts": fronts, "children": children, "child": [(c.requests, c.child_busy_s) for c in children],
            "calls": (batcher.calls, batcher.busy_s) if batcher is not None else (0, 0.0)}


def stages_line(label: str, mos: Any, before: dict[str, Any]) -> str:
    """One line: each stage of a search embedded ahead, p50 / p95 ms (stages are each their own percentiles)."""
    batcher = getattr(mos.embedder, "batcher", None)
    fronts, children = before["fronts"], before["children"]
    rows = [t for front in fronts for t in (front.timings or [])]
    for front in fronts:
        front.timings = None
    if not rows:
        return f"  {label}: no search embedded ahead"

    def cell(values: list[float]) -> str:
        return f"{pct(values, 50) * 1e3:.2f} / {pct(values, 95) * 1e3:.2f}"

    names = ("key", "checks first", "embedding", "to a search thread", "route", "back on the loop")
    parts = [f"{name} {cell([r[i] for r in rows])}" for i, name in enumerate(names)]
    parts.append(f"total {cell([sum(r) for r in rows])}")
    line = f"  {label} ({len(rows)} searches): " + ", ".join(parts)
    if batcher is not None and batcher.timings:
        emb = batcher.timings
        batcher.timings = None
        calls = batcher.calls - before["calls"][0]
        per_call = (batcher.busy_s - before["calls"][1]) / calls * 1e3 if calls else 0.0
        line += (f"\n    embedding: queued {cell([e[0] for e in emb])}, in its call {cell([e[1] for e in emb])}, "
                 f"until its coroutine ran {cell([e[2] for e in emb])}; {calls} calls, "
                 f"{per_call:.2f} ms wall per call")
        for (requests, busy), child in zip(before["child"], children, strict=True):
            if child.requests > requests:
                line += f", {(child.child_busy_s - busy) / (child.requests - requests) * 1e3:.2f} ms of it computing in the child"
    return line
