"""Where the serving process's CPU goes per search under load: ``bench_service`` with a profiler on its threads.

Why: at 200 searches/s a search holds the serving process's one GIL for ~4 ms (search threads ~3, event loop
~1), and the bench's per-thread split says which thread, not which code. This runs the same bench with
``cProfile`` (thread CPU clock) on the uvicorn loop thread and on each ``memos-search`` thread, for the first
loaded search run only, and writes their ``pstats`` text (own time, then cumulative) under ``--out``.

    OMP_NUM_THREADS=1 python -m benchmarks.profile_service --out /tmp/prof -- \\
        --users 50 --home H --duration 10 --search-rate 200 --only load --sweep ""

The profiler makes every Python call dearer (the loaded run's p95 is meaningless): read shares, not times.
"""

from __future__ import annotations

import argparse
import concurrent.futures.thread as pool_thread
import cProfile
import io
import pstats
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import bench_service


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="profile-service", help="folder for the loop's and search threads' stats")
    p.add_argument("--lines", type=int, default=45, help="rows per listing")
    p.add_argument("bench", nargs=argparse.REMAINDER, help="bench_service's arguments (after --)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profiles: dict[str, cProfile.Profile] = {}

    import uvicorn

    serve = uvicorn.Server.run

    def profiled_serve(self: Any, *a: Any, **kw: Any) -> Any:
        profiles["event-loop"] = _started()
        return serve(self, *a, **kw)

    work = pool_thread._worker  # type: ignore[attr-defined]

    def profiled_worker(*a: Any, **kw: Any) -> Any:
        name = threading.current_thread().name
        if name.startswith("memos-search"):
            profiles[name] = _started()
        return work(*a, **kw)

    run_load = bench_service._run_load
    done: list[str] = []

    def profiled_load(plan: Path, kind: str, **kw: Any) -> dict[str, Any]:
        if kind != "search" or not kw.get("rate") or done:
            return run_load(plan, kind, **kw)
        for prof in profiles.values():  # the warm-up and the unloaded run left out (a profiler runs in its own
            prof.clear()  # thread only: enable or disable here would profile this one)
        try:
            return run_load(plan, kind, **kw)
        finally:
            done.append(kind)
            for name, prof in list(profiles.items()):
                prof.create_stats()  # a snapshot: the thread keeps running under its profiler
                text = io.StringIO()
                stats = pstats.Stats(prof, stream=text)
                stats.sort_stats("tottime").print_stats(args.lines)
                stats.sort_stats("cumulative").print_stats(args.lines)
                (out / f"{name}.txt").write_text(text.getvalue())
            print(f"profiles of {sorted(profiles)} written to {out}", file=sys.stderr)

    uvicorn.Server.run = profiled_serve  # type: ignore[method-assign]
    pool_thread._worker = profiled_worker  # type: ignore[attr-defined]
    bench_service._run_load = profiled_load  # type: ignore[assignment]
    bench = args.bench[1:] if args.bench[:1] == ["--"] else args.bench
    return bench_service.main(bench)


def _started() -> cProfile.Profile:
    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    return prof


if __name__ == "__main__":
    raise SystemExit(main())
