"""benchmarks/bench_local.py keeps running: its --quick smoke mode on a tiny model, in-process. The same
smoke run on the real SmolLM2 (~20 s of CPU) is tests/stress/test_stress_bench_local_real.py (make stress)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


def test_bench_local_quick_runs_and_reports(capsys: Any) -> None:
    spec = importlib.util.spec_from_file_location("bench_local", ROOT / "benchmarks" / "bench_local.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = torch.get_num_threads()
    try:
        result = bench.main(["--quick", "--threads", "1"])
    finally:
        torch.set_num_threads(before)
    assert [row["history"] for row in result["ttft"]] == [64, 128]
    assert result["adapters"]["errors"] == 0
    assert result["adapters"]["max_resident"] <= result["adapters"]["residency"]
    assert "| history | recompute |" in capsys.readouterr().out

