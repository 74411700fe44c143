"""LangGraph face speed: MemOSSaver vs SqliteSaver / AsyncSqliteSaver, and MemOSStore put / search at scale.

Run: ``.venv/bin/python benchmarks/bench_langgraph.py [--checkpoints 1000] [--items 10000]``
Prints one table; the checkpointer ratio is ours / theirs in ops per second (>= 1.0: ours is as fast).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.base import PutOp

from memos_integrations import MemCube
from memos_integrations.langgraph import MemOSSaver, MemOSStore
from memos_integrations.textual.embed import MiniLMEmbedder

WORDS = ("tea coffee hiking lisbon python cello garden budget flight doctor sister paris novel yoga "
         "bakery deadline piano soccer museum recipe allergy camera winter beach").split()


def _checkpoint(i: int) -> dict[str, Any]:
    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": [f"message {j} of step {i}" for j in range(8)], "step": i}
    cp["channel_versions"] = {"messages": i + 1, "step": i + 1}
    return cp


def _plan(n: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [({"configurable": {"thread_id": f"t{i % 20}", "checkpoint_ns": ""}}, _checkpoint(i)) for i in range(n)]


READ_ROUNDS = 5  # reads are repeated and the best round kept: one round of list takes milliseconds, so a
                # single context switch on a shared machine would decide the ratio


def bench_sync(saver: Any, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    plan = _plan(n)
    t = time.perf_counter()
    stored = [saver.put(cfg, cp, {"source": "loop", "step": i}, {}) for i, (cfg, cp) in enumerate(plan)]
    out["put"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i, cfg in enumerate(stored):
        saver.put_writes(cfg, [("messages", f"w{i}"), ("step", i)], f"task{i}")
    out["put_writes"] = n / (time.perf_counter() - t)
    out["get_tuple"] = out["list"] = 0.0
    for _ in range(READ_ROUNDS):
        t = time.perf_counter()
        for cfg in stored:
            saver.get_tuple(cfg)
        out["get_tuple"] = max(out["get_tuple"], n / (time.perf_counter() - t))
        t = time.perf_counter()
        listed = sum(len(list(saver.list({"configurable": {"thread_id": f"t{k % 20}"}}, limit=10))) for k in range(200))
        out["list"] = max(out["list"], listed / (time.perf_counter() - t))
    return out


async def bench_async(saver: Any, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    plan = _plan(n)
    t = time.perf_counter()
    stored = [await saver.aput(cfg, cp, {"source": "loop", "step": i}, {}) for i, (cfg, cp) in enumerate(plan)]
    out["aput"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for i, cfg in enumerate(stored):
        await saver.aput_writes(cfg, [("messages", f"w{i}"), ("step", i)], f"task{i}")
    out["aput_writes"] = n / (time.perf_counter() - t)
    out["aget_tuple"] = out["alist"] = 0.0
    for _ in range(READ_ROUNDS):
        t = time.perf_counter()
        for cfg in stored:
            await saver.aget_tuple(cfg)
        out["aget_tuple"] = max(out["aget_tuple"], n / (time.perf_counter() - t))
        t = time.perf_counter()
        listed = 0
        for k in range(200):
            listed += len([x async for x in saver.alist({"configurable": {"thread_id": f"t{k % 20}"}}, limit=10)])
        out["alist"] = max(out["alist"], listed / (time.perf_counter() - t))
    return out


async def _async_pair(tmp: Path, cube: MemCube, n: int) -> tuple[dict[str, float], dict[str, float]]:
    async with AsyncSqliteSaver.from_conn_string(str(tmp / "async.sqlite")) as theirs:
        await theirs.setup()
        t = await bench_async(theirs, n)
    return await bench_async(MemOSSaver(cube), n), t


def _memory(rng: random.Random, i: int) -> dict[str, Any]:
    return {"text": f"{' '.join(rng.sample(WORDS, 6))} note {i}", "n": i % 100}


def bench_store(tmp: Path, embedder: Any, n_items: int, queries: int) -> dict[str, float]:
    rng = random.Random(0)
    out: dict[str, float] = {}
    with MemCube.init_from_dir(tmp / "store_cube", embedder=embedder) as cube:
        store = MemOSStore(cube, index={"fields": ["text"]})
        single = 100
        t = time.perf_counter()
        for i in range(single):
            store.put(("users", f"u{i % 100}", "memories"), f"s{i}", _memory(rng, i))
        out["put (one per call) items/s"] = single / (time.perf_counter() - t)
        t, cpu = time.perf_counter(), time.process_time()
        batch = 256
        for start in range(0, n_items, batch):
            store.batch([PutOp(("users", f"u{i % 100}", "memories"), f"k{i}", _memory(rng, i), None, None)
                         for i in range(start, min(start + batch, n_items))])
        out[f"put (batch of {batch}) items/s"] = n_items / (time.perf_counter() - t)
        # CPU time of this process (all its threads): what the work costs, whatever else shares the machine
        out[f"put (batch of {batch}) items per CPU-second"] = n_items / (time.process_time() - cpu)

        def p95(fn: Callable[[str], Any]) -> tuple[float, float]:
            wall, cpu = [], []
            for _ in range(queries):
                query = f"{rng.choice(WORDS)} and {rng.choice(WORDS)} plans"
                t0, c0 = time.perf_counter(), time.process_time()
                fn(query)
                wall.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
            return statistics.quantiles(wall, n=20)[18], statistics.quantiles(cpu, n=20)[18]

        total = n_items + single
        cases: dict[str, Callable[[str], Any]] = {
            f"one user (~{total // 100} items)": lambda q: store.search(("users", f"u{rng.randrange(100)}"), query=q, limit=10),
            f"all users ({total} items)": lambda q: store.search(("users",), query=q, limit=10),
            f"all users + filter ({total} items)": lambda q: store.search(("users",), query=q, filter={"n": {"$lt": 50}}, limit=10),
        }
        for name, fn in cases.items():
            out[f"search p95 ms, {name}"], out[f"search p95 CPU ms, {name}"] = p95(fn)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoints", type=int, default=1000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    embedder = MiniLMEmbedder()
    _ = embedder.fingerprint
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        with MemCube.init_from_dir(tmp / "cp_cube", embedder=embedder) as cube:
            ours = bench_sync(MemOSSaver(cube), args.checkpoints)
        conn = sqlite3.connect(str(tmp / "sync.sqlite"), check_same_thread=False)
        theirs = bench_sync(SqliteSaver(conn), args.checkpoints)
        conn.close()
        with MemCube.init_from_dir(tmp / "acp_cube", embedder=embedder) as cube:
            aours, atheirs = asyncio.run(_async_pair(tmp, cube, args.checkpoints))
        store = bench_store(tmp, embedder, args.items, args.queries)
    print(f"\nCheckpointer, {args.checkpoints} checkpoints over 20 threads (ops/s; list counts tuples/s; reads: best of {READ_ROUNDS} rounds)\n")
    print("| operation | MemOSSaver | SqliteSaver / AsyncSqliteSaver | ratio |")
    print("|---|---:|---:|---:|")
    for name in ours:
        print(f"| {name} | {ours[name]:,.0f} | {theirs[name]:,.0f} | {ours[name] / theirs[name]:.2f} |")
    for name in aours:
        print(f"| {name} | {aours[name]:,.0f} | {atheirs[name]:,.0f} | {aours[name] / atheirs[name]:.2f} |")
    print(f"\nStore, {args.items + 100} items (MiniLM embedding included), {args.queries} queries\n")
    print("| measure | value |")
    print("|---|---:|")
    for name, value in store.items():
        print(f"| {name} | {value:,.1f} |")


if __name__ == "__main__":
    main()
