"""Near-duplicate memories and the tree (issue 14): one user writes one sentence again and again with small
variations (a prefix, a number, the ending): how many topic summaries, how long organising takes, and what a
search over that user costs afterwards.

Each of ``--n`` memories is a distinct variation, embedded by MiniLM (ingest not timed). Run:
``nice python -m benchmarks.bench_near_duplicates [--n 5000]``.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from .common import table


def variations(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    fill = ["", "Remember: ", "FYI ", "Note that ", "Just so you know, "]
    ends = [".", "!", " :)", ". Thanks.", ""]
    return [f"{rng.choice(fill)}my bank is Nordea and my account number ends in {rng.randint(1000, 9999)}{rng.choice(ends)}"
            for _ in range(n)]


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    from memos_integrations import MemCube
    from memos_integrations.items import Kind
    from memos_integrations.organize import organize

    with tempfile.TemporaryDirectory() as tmp:
        cube = MemCube.init_from_dir(Path(tmp) / "cube")
        cube.add(memory=variations(args.n), user_id="nils")
        started = time.perf_counter()
        report = organize(cube, reader=None)
        seconds = time.perf_counter() - started
        topics = [s for s in cube.get_all(user_id="nils", kinds=[Kind.SUMMARY]) if s.metadata.get("summary") == "topic"]
        cube.search("Which bank do I use?", user_id="nils", top_k=10)  # warm
        lat = []
        for _ in range(20):
            t = time.perf_counter()
            cube.search("Which bank do I use?", user_id="nils", top_k=10)
            lat.append(time.perf_counter() - t)
        lat.sort()
        print(table(["memories", "topic summaries", "largest topic", "organise s", "s / 1,000", "search p50 ms",
                     "search p95 ms"],
                    [[args.n, len(topics), max((t.metadata["members"] for t in topics), default=0), f"{seconds:.2f}",
                      f"{seconds / args.n * 1000:.2f}", f"{lat[len(lat) // 2] * 1000:.1f}",
                      f"{lat[int(len(lat) * 0.95) - 1] * 1000:.1f}"]]))
        print("largest topic:", max(topics, key=lambda t: t.metadata["members"]).text[:200] if topics else "-")
        print(f"report: clusters={report.clusters} topics_written={report.topics_written}")
        cube.close()


if __name__ == "__main__":
    main()
