"""Where a fast add's milliseconds go: embedding, the SQLite write, the vector index; synchronous against
deferred index writes (:mod:`memos_integrations.textual.index_defer`), on a LoCoMo-sized embedded cube.

CPU time (``time.process_time``, every thread of this process: the background drain is counted) is the
figure to trust on a shared machine; wall time is printed beside it with the load average. Then what one
embedded Chroma upsert costs by batch size: the fixed part is what deferring saves.

    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.bench_add_path [--adds 100] [--upserts-only]
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .common import locomo, sessions, table, turn_messages

_PHASES: dict[str, list[float]] = {}


def _timed(owner: Any, name: str, label: str) -> Callable[[], None]:
    """Count CPU and wall time spent in ``owner.name`` under ``label``; returns the undo."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            acc = _PHASES.setdefault(label, [0.0, 0.0])
            acc[0] += time.process_time() - cpu
            acc[1] += time.perf_counter() - wall

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, original)


def _run(cube: Any, texts: list[str], defer: bool) -> list[list[Any]]:
    from memos_integrations.textual import index_defer

    if defer:
        index_defer.defer_writes(cube.text_mem)
    _PHASES.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    for n, text in enumerate(texts):
        cube.add(memory=f"{text} (note {n})", user_id="bench", kind="fact")
    total_cpu, total_wall = time.process_time() - cpu, time.perf_counter() - wall
    drain = time.process_time()
    flushed = index_defer.flush(cube.text_mem) if defer else 0
    drain_cpu = time.process_time() - drain
    n = len(texts)
    mode = "deferred" if defer else "synchronous"
    rows = [[mode, label, c / n * 1e3, w / n * 1e3] for label, (c, w) in _PHASES.items()]
    rows.append([mode, "whole add (MemCube.add)", total_cpu / n * 1e3, total_wall / n * 1e3])
    if defer:
        rows.append([mode, f"final drain of {flushed} queued rows, per add", drain_cpu / n * 1e3, "-"])
    return rows


def _upsert_costs(dim: int) -> list[list[Any]]:
    from memos_integrations.storage.base import IndexRow
    from memos_integrations.storage.chroma import ChromaIndex

    rng = np.random.default_rng(0)
    index = ChromaIndex.persistent(tempfile.mkdtemp(prefix="bench-add-chroma-"), "bench")

    def vectors(n: int) -> np.ndarray:
        v = rng.standard_normal((n, dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    index.upsert([IndexRow(f"base{i}") for i in range(500)], vectors(500))
    rows, k = [], 0
    for batch in (1, 1, 10, 32, 64, 100, 256):
        ids = [IndexRow(f"x{k + i}") for i in range(batch)]
        k += batch
        matrix = vectors(batch)
        with _Ticker() as ticker:
            cpu, wall = time.process_time(), time.perf_counter()
            index.upsert(ids, matrix)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rows.append([batch, cpu * 1e3, wall * 1e3, cpu * 1e3 / batch, ticker.longest * 1e3])
    return rows


class _Ticker:
    """A thread that wakes every 0.5 ms; ``longest`` is its longest gap (s): how long another Python thread
    (a request) could not run. An embedded Chroma upsert holds the GIL for most of its wall time, which is
    why the deferred drain paces itself (textual/index_defer.py, ``PACE``)."""

    def __init__(self) -> None:
        import threading

        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.0005)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> _Ticker:
        self._thread.start()
        time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adds", type=int, default=100, help="fast adds per mode")
    p.add_argument("--upserts-only", action="store_true", help="only the Chroma upsert table (seconds, no cube)")
    args = p.parse_args(argv)
    if args.upserts_only:
        print(table(["Chroma upsert batch", "CPU ms", "wall ms", "CPU ms per vector", "longest stall of another thread ms"],
                    _upsert_costs(384)))
        print(f"load average {os.getloadavg()[0]:.1f}")
        return 0

    from memos_integrations import MemCube
    from memos_integrations.storage.chroma import ChromaIndex
    from memos_integrations.storage.sqlstore import SQLStore
    from memos_integrations.textual import index_sync, memory
    from memos_integrations.textual.embed import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    conv = locomo()[0]
    turns = [t for _, _, ts in sessions(conv) for t in ts]
    texts = [t["text"] for t in turns][: args.adds]
    root = Path(tempfile.mkdtemp(prefix="bench-add-path-"))
    template = MemCube.create(root / "template", embedder=embedder)
    for key, when, ts in sessions(conv):
        template.add(messages=turn_messages(ts), user_id="bench", session_id=key, timestamp=when)
    size = template.stats()["items"]
    undo = [
        _timed(memory, "item_vectors", "embed the item's views (MiniLM)"),
        _timed(SQLStore, "write_items", "SQLite: item, version, FTS, vector, outbox"),
        _timed(ChromaIndex, "upsert", "Chroma upsert (in the add, or in the background drain)"),
        _timed(index_sync, "sync_after_commit", "index upkeep after the commit"),
    ]
    rows: list[list[Any]] = []
    for defer in (False, True):
        path = root / f"cube-{defer}"
        template.clone(path, cube_id=f"cube-{defer}").close()
        with MemCube.open(path, embedder=embedder) as cube:
            cube.add(memory="warm up", user_id="bench")
            rows += _run(cube, texts, defer)
    for u in undo:
        u()
    template.close()
    print(f"cube: {size} items (LoCoMo {conv['sample_id']}); {len(texts)} fast adds per mode; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(table(["mode", "phase", "CPU ms per add", "wall ms per add"], rows))
    print()
    print(table(["Chroma upsert batch", "CPU ms", "wall ms", "CPU ms per vector", "longest stall of another thread ms"],
                _upsert_costs(embedder.dimension)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
