"""benchmarks/bench_parametric.py: no training question is an evaluation question, and routing scores
each request with the adapter's output only when it was routed (no model needed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_parametric", ROOT / "benchmarks" / "bench_parametric.py")
assert spec is not None and spec.loader is not None
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_training_views_never_contain_an_evaluation_question() -> None:
    data, views = json.loads(bench.RECALL.read_text()), json.loads(bench.VIEWS.read_text())
    qa = bench.training_qa(data, views, "views")
    evals = {f["eval_q"].lower() for f in data["facts"]}
    assert len(qa) == 100 and not {q.lower() for q, _ in qa} & evals
    assert not set(views["dev_general"]) & set(data["controls"])
    assert not set(views["replay_texts"]) & set(data["generic"])


def test_routed_scores_take_the_adapter_only_where_routed() -> None:
    data = json.loads(bench.RECALL.read_text())
    n, nc, ng = len(data["facts"]), len(data["controls"]), len(data["generic"])
    base = {"closed": ["?"] * n, "rag": ["?"] * n, "controls": ["c"] * nc, "generic_loss": [1.0] * ng,
            "mixed": ["?"] * 3}
    adapted = {"closed": [f["answer"] for f in data["facts"]], "rag": ["?"] * n, "controls": ["x"] * nc,
               "generic_loss": [2.0] * ng, "mixed": ["?"] * 3}
    route = {"questions": [True] * (n - 1) + [False], "controls": [False] * (nc - 1) + [True],
             "generic": [False] * ng, "mixed": [True] * 3}
    plain, routed = bench.score(adapted, base, data, None), bench.score(adapted, base, data, route)
    assert (plain["closed"], plain["controls_unchanged"]) == (n, 0)
    assert (routed["closed"], routed["controls_unchanged"]) == (n - 1, nc - 1)
    assert routed["ppl"] < plain["ppl"]  # generic text stayed on the base model
