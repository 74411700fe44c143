"""benchmarks/bench_guarantees.py keeps running: its --quick smoke mode, in-process, on the session's MiniLM."""

from __future__ import annotations

import importlib
from typing import Any


def test_bench_guarantees_quick_runs_and_reports(embedder: Any, capsys: Any) -> None:
    bench = importlib.import_module("benchmarks.bench_guarantees")
    result = bench.main(["--quick"])
    assert [row["items"] for row in result["open"]] == [200, 500]
    assert all(row["verified_on_open"] and row["open"] > row["check"] for row in result["open"])
    assert set(result["updates"]) == {(c, cas, n) for c in ("text", "metadata") for cas in (False, True) for n in (1, 4)}
    assert all(rate > 0 for rate in result["updates"].values())
    assert len(result["search"]) == 4 and all(float(row[4]) > 0 for row in result["search"])  # the re-read was timed
    assert result["add_long"]["parts"] > 1
    out = capsys.readouterr().out
    for heading in ("| items | memory.db MB | open total |", "| change | expected_version |",
                    "| cube | scope | p50 ms |", "| query | chars | p50 ms |"):
        assert heading in out
