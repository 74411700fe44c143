"""benchmarks/bench_guarantees.py keeps running: its --quick smoke mode, in-process, on the session's MiniLM."""

from __future__ import annotations

import importlib
from typing import Any


def test_bench_guarantees_quick_runs_and_reports(embedder: Any, capsys: Any) -> None:
    bench = importlib.import_module("benchmarks.bench_guarantees")
    result = bench.main(["--quick"])
    assert [row["items"] for row in result["open"]] == [200, 500]
    assert all(row["verified_on_open"] and min(row["open"], row["bare"], row["check"]) > 0 for row in result["open"])
    throughput = {(c, cas, n) for c in ("text", "metadata") for cas in (False, True) for n in (1, 4)}
    assert set(result["updates"]) == throughput | {("paired", "text"), ("paired", "metadata")}
    assert all(result["updates"][key] > 0 for key in throughput)
    assert len(result["search"]) == 4 and all(float(row[4]) > 0 for row in result["search"])  # the re-read was timed
    assert result["add_long"]["parts"] > 1
    out = capsys.readouterr().out
    for heading in ("| items | memory.db MB | with both checks |", "| items | check_database |",
                    "| change | expected_version |", "| change | off | on |", "| cube | scope | p50 ms |",
                    "| query | chars | p50 ms |"):
        assert heading in out
