"""CPU per int8 query embedding: the reference forward against the lean one (textual/int8_fast.py).

    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.bench_query_embed

Three parts, in one run:

1. **Same bits** (``--check``, on by default): the 762 LoCoMo dev questions (categories 1-4) embedded
   alone by the reference pass (``TorchBert.int8_fast = False``), then by the lean pass alone, in
   batches of 2, 4 and 8 in order and in shuffled batches of 1-8: every row must equal the reference
   bit for bit (the benchmark exits 1 otherwise). ``--threads`` also checks the lean pass at 2 torch threads.
2. **In process**: ``time.process_time`` per query of ``MiniLMEmbedder.embed_queries`` at batch 1, 2,
   4 and 8 (all the process's threads, so thread wake-ups count), median of ``--repeat`` passes over
   ``--queries`` questions, before and after interleaved pass by pass so load drifts hit both alike;
   and the torch operators one call dispatches (the first questions, counted: the same on any machine).
3. **Through the embedding process** (the service's path): the child's CPU (``/proc`` user + system)
   and this process's CPU per query for ``EmbedProcess.embed_queries`` at the same batch sizes, one
   child as before (reference pass, configured threads) and one as now (lean pass, int8 queries on one
   torch thread: textual/int8_fast.py ``int8_thread``). ``--child-threads 2`` shows what ``memcube
   serve`` run without ``OMP_NUM_THREADS`` gives its child on this 2-core machine.

CPU time is used because the machine is shared (the load average is printed with the tables);
wall-clock numbers would be noise.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import locomo, table  # noqa: E402

BATCHES = (1, 2, 4, 8)
#: a child as it was: the reference forward, at its configured torch threads (the lean pass and the one-thread
#: switch turned off before the child's own main())
_REFERENCE_CHILD = ("import sys; sys.path[0] = sys.argv[1]; from memos_integrations.textual import minilm, int8_fast; "
                    "minilm.TorchBert.int8_fast = False; int8_fast.ONE_THREAD = False; "
                    "from memos_integrations.textual.embed_process import main; main()")


def questions() -> list[str]:
    """The LoCoMo dev questions a retrieval benchmark asks (categories 1-4): 762."""
    return [q["question"] for conv in locomo() for q in conv["qa"] if q.get("category") in (1, 2, 3, 4)]


def embed_in(embedder: Any, texts: list[str], batch: int) -> np.ndarray:
    return np.concatenate([embedder.embed_queries(texts[i:i + batch]) for i in range(0, len(texts), batch)])


def check(embedder: Any, texts: list[str], threads: bool) -> list[list[Any]]:
    """Rows differing from the reference (embedded alone), per way of embedding; all must be 0."""
    import torch

    model = embedder._model
    model.int8_fast = False
    reference = embed_in(embedder, texts, 1)
    model.int8_fast = True
    rows = []

    def compare(how: str, got: np.ndarray) -> None:
        differ = int((got.view(np.uint32) != reference.view(np.uint32)).any(1).sum())
        rows.append([how, len(texts), differ, f"{float(np.abs(got - reference).max()):.1e}"])

    for batch in BATCHES:
        compare(f"lean, batches of {batch}", embed_in(embedder, texts, batch))
    rng = random.Random(13)
    order = list(range(len(texts)))
    rng.shuffle(order)
    shuffled, start = np.empty_like(reference), 0
    while start < len(order):
        idx = order[start:start + rng.randint(1, 8)]
        shuffled[idx] = embedder.embed_queries([texts[i] for i in idx])
        start += len(idx)
    compare("lean, shuffled batches of 1-8", shuffled)
    if threads:
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            compare("lean, 2 torch threads, batches of 4", embed_in(embedder, texts, 4))
        finally:
            torch.set_num_threads(before)
    return rows


def cpu_per_query(run: Callable[[list[str]], Any], texts: list[str], batch: int) -> float:
    start = time.process_time()
    for i in range(0, len(texts), batch):
        run(texts[i:i + batch])
    return (time.process_time() - start) * 1000 / len(texts)


def torch_ops(embedder: Any, texts: list[str]) -> int:
    """torch operators dispatched embedding ``texts`` in one call (deterministic, unlike CPU time)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        embedder.embed_queries(texts)
    return Count.n


def in_process(embedder: Any, texts: list[str], repeat: int) -> list[list[Any]]:
    model = embedder._model
    rows = []
    for batch in BATCHES:
        passes: dict[bool, list[float]] = {False: [], True: []}
        ops = {}
        for fast in (False, True):
            model.int8_fast = fast
            ops[fast] = torch_ops(embedder, texts[:batch])
        for _ in range(repeat):
            for fast in (False, True):
                model.int8_fast = fast
                passes[fast].append(cpu_per_query(embedder.embed_queries, texts, batch))
        before, after = statistics.median(passes[False]), statistics.median(passes[True])
        rows.append([batch, f"{before:.2f}", f"{after:.2f}", f"{1 - after / before:.0%}", ops[False], ops[True]])
    model.int8_fast = True
    return rows


def through_child(embedder: Any, texts: list[str], repeat: int, threads: int | None) -> list[list[Any]]:
    from memos_integrations.textual.embed_process import EmbedProcess

    children = {}
    for name in ("before", "after"):
        child = EmbedProcess.like(embedder, threads=threads)
        if name == "before":
            child.argv[2] = _REFERENCE_CHILD
        child.start()
        child.embed_queries(texts[:8])  # warm
        children[name] = child
    rows = []
    try:
        for batch in BATCHES:
            got: dict[str, dict[str, list[float]]] = {n: {"child": [], "parent": []} for n in children}
            for _ in range(repeat):
                for name, child in children.items():
                    child_start, parent_start = child.cpu_seconds(), time.process_time()
                    for i in range(0, len(texts), batch):
                        child.embed_queries(texts[i:i + batch])
                    got[name]["child"].append((child.cpu_seconds() - child_start) * 1000 / len(texts))
                    got[name]["parent"].append((time.process_time() - parent_start) * 1000 / len(texts))
            med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in got.items()}
            rows.append([batch, f"{med['before']['child']:.2f}", f"{med['after']['child']:.2f}",
                         f"{1 - med['after']['child'] / med['before']['child']:.0%}",
                         f"{med['before']['parent']:.2f}", f"{med['after']['parent']:.2f}"])
    finally:
        for child in children.values():
            child.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=96, help="questions per timed pass (default 96)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per cell; the median is reported")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip the bit-for-bit check")
    parser.add_argument("--threads", action="store_true", help="also check the lean pass at 2 torch threads")
    parser.add_argument("--no-child", dest="child", action="store_false", help="skip the embedding-process table")
    parser.add_argument("--child-threads", type=int, default=None,
                        help="torch threads the children are configured with (default: this process's, as "
                             "memcube serve does; 2 is what serve gives them on this machine without OMP_NUM_THREADS)")
    args = parser.parse_args(argv)

    import torch

    from memos_integrations.textual.embed import MiniLMEmbedder

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    embedder = MiniLMEmbedder(query_precision="int8")
    if embedder.query_precision_in_use != "int8":
        print(f"no int8 here ({embedder._model.int8_unavailable}); nothing to compare")
        return 1
    texts = questions()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); load average at start "
          f"{os.getloadavg()[0]:.2f}")
    failed = False
    if args.check:
        rows = check(embedder, texts, args.threads)
        print("\nSame bits: rows differing from the reference int8 pass (each text alone)\n")
        print(table(["how", "texts", "rows differing", "max abs diff"], rows))
        failed = any(r[2] for r in rows)
    timed = texts[:args.queries]
    embed_in(embedder, timed, 8)  # warm both paths' shapes
    print(f"\nIn process: CPU ms per query (process_time, median of {args.repeat} passes of {len(timed)} "
          "questions)\n")
    print(table(["batch", "before", "after", "saved", "torch ops/call before", "after"],
                in_process(embedder, timed, args.repeat)))
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.child:
        threads = args.child_threads or torch.get_num_threads()
        print(f"\nThrough the embedding process ({threads} torch thread(s) configured): CPU ms per query, child and "
              f"parent (median of {args.repeat})\n")
        print(table(["batch", "child before", "child after", "saved", "parent before", "parent after"],
                    through_child(embedder, timed, args.repeat, threads)))
        print(f"load average {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
