"""Search latency at 100k items, and bulk ingest throughput, on the embedded default.

The corpus is 100,000 distinct generated sentences (fixed seed), spread over 100 users. Every query
is distinct (so the query-embedding cache never helps) and its latency includes embedding it.
Two scopes: one user's ~1,000 items (the exact dense path over vectors cached from SQLite), and the
whole cube (Chroma's ANN index, then the filter checked in SQLite).

    python -m benchmarks.bench_scale [--items 100000] [--queries 200]

The built cube is kept under bench_out/ so a second run measures search without rebuilding.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from memos_integrations import MemCube
from memos_integrations.textual.embed import MiniLMEmbedder

from .common import pct, table

PEOPLE = ["Maya", "Sam", "Lena", "Priya", "Ines", "Tomas", "Aiko", "Ravi", "Noor", "Jonas", "Elif", "Marco"]
ACTS = ["booked", "cancelled", "repaired", "painted", "sold", "borrowed", "planned", "cooked", "photographed",
        "visited", "ordered", "returned", "cleaned", "measured", "decorated", "recorded"]
THINGS = ["the red bicycle", "a wooden bookshelf", "the garden shed", "a vegan lasagne", "the quarterly report",
          "a trip to Porto", "the piano lessons", "a pottery bowl", "the kitchen window", "a birthday cake",
          "the old camera", "a hiking trail map", "the dentist appointment", "a jazz concert", "the car insurance",
          "a surfing course", "the living room lamp", "a chess tournament", "the family reunion", "a new laptop"]
PLACES = ["in Lisbon", "at the office", "near the river", "in the city centre", "at grandma's house", "downtown",
          "at the community centre", "by the beach", "in the mountains", "at the market"]
WHEN = ["on Monday", "last weekend", "in early March", "before the holidays", "after work", "on her birthday",
        "during the storm", "in the morning", "late at night", "two weeks ago"]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        s = f"{rng.choice(PEOPLE)} {rng.choice(ACTS)} {rng.choice(THINGS)} {rng.choice(PLACES)} {rng.choice(WHEN)}"
        s += f" (note {len(out)})"  # distinct texts, as real memories are
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def questions(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"When did {rng.choice(PEOPLE)} {rng.choice(ACTS).rstrip('ed')} {rng.choice(THINGS)} {rng.choice(PLACES)}? #{i}"
            for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dir", default="bench_out/scale")
    args = ap.parse_args()
    embedder = MiniLMEmbedder()
    _ = embedder.fingerprint
    path = Path(args.dir) / f"cube_{args.items}"
    rows: list[list[object]] = []
    if (path / "cube.json").exists():
        cube = MemCube.open(path, embedder=embedder)
        print(f"reusing {path} ({cube.stats()['items']} items)")
    else:
        cube = MemCube.create(path, embedder=embedder)
        texts = corpus(args.items)
        start = time.perf_counter()
        step = 1000
        for i in range(0, len(texts), step):
            cube.add(memory=texts[i : i + step], user_id=f"user{(i // step) % 100}")
        secs = time.perf_counter() - start
        rows.append(["bulk ingest (embed + SQLite + Chroma), items/s", f"{args.items / secs:.0f}", f"{secs:.0f} s total"])
    qs = questions(args.queries * 2)
    for label, kwargs in (("search, one user (~1k items, exact)", {"user_id": "user7"}),
                          ("search, whole cube (ANN + SQL filter)", {})):
        lat = []
        for q in qs[: args.queries] if not kwargs else qs[args.queries :]:
            start = time.perf_counter()
            cube.search(q, top_k=10, **kwargs)  # type: ignore[arg-type]
            lat.append(time.perf_counter() - start)
        rows.append([label, f"p50 {pct(lat, 50) * 1000:.1f} ms", f"p95 {pct(lat, 95) * 1000:.1f} ms"])
    print(table([f"{args.items:,} items", "value", "detail"], rows))
    cube.close()


if __name__ == "__main__":
    main()
