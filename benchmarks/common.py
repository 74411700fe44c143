"""Helpers shared by the benchmarks: timing, percentiles, tables, and the LoCoMo loader."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

LOCOMO = Path(os.environ.get("LOCOMO_PATH", Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo-dev.json"))


def locomo() -> list[dict[str, Any]]:
    """The LoCoMo dev split, read in place (never copied into the project)."""
    if not LOCOMO.exists():
        raise SystemExit(f"LoCoMo dev split not found at {LOCOMO}; set LOCOMO_PATH")
    return json.loads(LOCOMO.read_text())  # type: ignore[no-any-return]


def sessions(conv: dict[str, Any]) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(session key, session date text, turns) in session order."""
    c = conv["conversation"]
    n = 1
    while f"session_{n}" in c:
        yield f"session_{n}", c[f"session_{n}_date_time"], c[f"session_{n}"]
        n += 1


def turn_messages(turns: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One message per dialogue turn, id = dia_id; an image turn's caption is the message's ``caption``
    (the reader appends it to the text as ``[shares a photo: ...]``, as earlier runs did themselves)."""
    out = []
    for t in turns:
        msg = {"role": "user", "name": t["speaker"], "content": t["text"], "id": t["dia_id"]}
        if t.get("blip_caption"):
            msg["caption"] = t["blip_caption"]
        out.append(msg)
    return out


def timed(fn: Callable[[], Any], repeat: int = 1) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
