"""Recall and the CPU one search costs, per plan, on LoCoMo dev flat cubes (issue 14).

The wall clock of a search measures the machine's load as much as the code; the thread CPU time of
the searching thread (``time.thread_time``: query embedding, legs, fusion; one torch thread) is
steadier. Each plan embeds its queries afresh. Recall is R@10 within 400 words, counted as
:mod:`benchmarks.bench_retrieval` counts it (a hit with more than 3 source turns counts for none).

``--cubes-dir`` keeps the built cubes (one folder per conversation) and reuses them on the next run,
so comparing plans does not pay ingest again.

    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.bench_search_cpu --plans "balanced,balanced without unnamed leg (before)"
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from memos_integrations import MemCube
from memos_integrations.textual.embed import MiniLMEmbedder

from .bench_retrieval import PLANS, build, in_budget, recall
from .common import locomo, pct, table


def _recall(hits: list[Any], evidence: set[str]) -> float:
    return recall(in_budget(hits), evidence)


def run(names: list[str], limit: int | None, root: Path) -> list[list[Any]]:
    embedder = MiniLMEmbedder()
    data = locomo()[:limit]
    cubes = []
    for conv in data:
        path = root / conv["sample_id"]
        cube = MemCube.open(path, embedder=embedder) if path.exists() else build(conv, root, embedder, 1)[0]
        cubes.append((cube, conv))
    rows = []
    for name in names:
        plan = PLANS[name]
        recall: dict[str, list[float]] = defaultdict(list)
        cpu: list[float] = []
        embedder.clear_query_cache()
        for cube, conv in cubes:
            for q in conv["qa"]:
                if q["category"] == 5 or not q.get("evidence"):
                    continue
                start = time.thread_time()
                hits = cube.search(q["question"], top_k=20, plan=plan)
                cpu.append(time.thread_time() - start)
                r = _recall(hits, {e.strip() for e in q["evidence"]})
                recall[str(q["category"])].append(r)
                recall["all"].append(r)
        mean = {k: sum(v) / len(v) for k, v in recall.items()}
        rows.append([name, mean["all"], *(mean[c] for c in "1234"), pct(cpu, 50) * 1000, pct(cpu, 95) * 1000])
    for cube, _ in cubes:
        cube.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plans", default="balanced", help="comma-separated row names of bench_retrieval.PLANS")
    ap.add_argument("--limit", type=int, default=None, help="first N conversations only")
    ap.add_argument("--cubes-dir", default=None, help="keep the built cubes here and reuse them")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.plans.split(",") if n.strip()]
    unknown = set(names) - set(PLANS)
    if unknown:
        raise SystemExit(f"unknown plans {sorted(unknown)}; rows: {sorted(PLANS)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.cubes_dir) if args.cubes_dir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        rows = run(names, args.limit, root)
    print(table(["plan", "R@10 in 400 words", "cat1", "cat2", "cat3", "cat4", "thread CPU p50 ms",
                 "thread CPU p95 ms"], rows))


if __name__ == "__main__":
    main()
