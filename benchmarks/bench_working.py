"""What the write path's working memory costs an add (organize/partitions.py: ``admit`` inside the add's
transaction, ``keep_working`` after it), on and off, in the steady state where each add demotes one item.

The user has other history (``prefill`` memories in 50 older sessions) and 25 items in the current session
before the timed adds, so every timed add pushes one item out of working memory.

    nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.bench_working 200
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from typing import Any

from memos_integrations import MemCube
from memos_integrations.organize import partitions as W
from memos_integrations.organize.partitions import set_working_policy

from .common import table

SPENT: dict[str, float] = {}


def timed(name: str) -> None:
    """Accumulate the process CPU spent in ``partitions.<name>`` into SPENT."""
    inner = getattr(W, name)

    @functools.wraps(inner)
    def wrapper(*a: Any, **kw: Any) -> Any:
        start = time.process_time()
        try:
            return inner(*a, **kw)
        finally:
            SPENT[name] = SPENT.get(name, 0.0) + time.process_time() - start

    setattr(W, name, wrapper)


def run(embedder: Any, on: bool, n: int, prefill: int) -> tuple[float, float, float]:
    """(CPU ms, wall ms, ms in admit + keep_working) per add, over ``n`` adds."""
    with tempfile.TemporaryDirectory() as tmp, MemCube.init_from_dir(f"{tmp}/c", embedder=embedder) as cube:
        set_working_policy(cube, on=on)
        for s in range(50):
            cube.add(memory=[f"old session {s} note {k} about things" for k in range(prefill // 50)],
                     user_id="u", session_id=f"old{s}")
        cube.add(memory=[f"warm {k}" for k in range(25)], user_id="u", session_id="now")
        SPENT.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        for k in range(n):
            cube.add(memory=f"Turn {k}: we talked about the trip and topic {k}.", user_id="u", session_id="now")
        return ((time.process_time() - cpu) / n * 1000, (time.perf_counter() - wall) / n * 1000,
                sum(SPENT.values()) / n * 1000)


def main() -> None:
    from memos_integrations.textual.embed import MiniLMEmbedder
    from tests.integration.concurrency_workers import HashEmbedder

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    timed("admit")
    timed("keep_working")
    before = open("/proc/loadavg").read().split()[:3]
    rows = []
    for name, embedder, sizes in (("hash (database cost only)", HashEmbedder(), (1000, 10000)),
                                  ("MiniLM", MiniLMEmbedder(), (1000,))):
        for prefill in sizes:
            for on in (False, True):
                cpu, wall, hook = run(embedder, on, n, prefill)
                rows.append([name, prefill + 25 + n, "on" if on else "off", cpu, wall, hook])
    print(table(["embedder", "user's memories", "working memory", "CPU ms/add", "wall ms/add",
                 "in admit + keep_working ms/add"], rows))
    print(f"load average before {' '.join(before)}, after {' '.join(open('/proc/loadavg').read().split()[:3])}")


if __name__ == "__main__":
    main()
