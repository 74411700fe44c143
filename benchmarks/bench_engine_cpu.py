"""The engine's own CPU per search and per add, on a LoCoMo-sized cube (issue 13's throughput).

One LoCoMo dev conversation becomes a cube (built as ``bench_retrieval.build`` does, once, in
``--cube``). Searches: the conversation's questions (categories 1-4), top_k=10, each plan; every
question's embedding is computed once beforehand (the embedder's query cache), so the figure is the
engine's CPU (SQL, decoding, fusion, boosts, MMR) and not MiniLM's. CPU is ``time.thread_time`` of
the searching thread, median over ``--repeat`` passes of the per-search mean. Adds: single short
memories (fast mode) one at a time; CPU is ``time.process_time`` (every thread: the embedding, the
SQLite commit and the vector index's upsert), median per add; wall time beside it. Then ``--threads``
threads adding at once: adds/s and process CPU per add. Deterministic beside them: SQL statements, rows
fetched and ``json.loads`` calls per search (CPU time inflates with the machine's load).

CPU time is used because the machine is shared: wall-clock figures are noisy (load average printed).

    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.bench_engine_cpu --cube /tmp/engine_cpu_cube
    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.bench_engine_cpu --profile search   # cProfile top 25

``--novel``: every question of ``--convs`` searched ONCE (balanced), in turn across the cubes, as a
service sees new questions: no pass repeats a query, so nothing keyed by the query text is warm except
its embedding (every question is embedded first and passed as ``query_vector``, so MiniLM is left out;
rows and candidates held per cube, and the speakers' name vectors, are warmed by one unrelated search
per cube; per-row-text caches start cold). Thread CPU per search, p50/p95/mean. ``--save``
writes every hit (id, score repr, leg ranks) per question; ``--compare`` checks a run against such a
file (byte-identical results before vs after an engine change). ``--novel --profile search`` profiles
those searches (cProfile, by tottime). ``--novel --cold``: each search follows a commit to its cube, as in a
service where adds interleave with searches: one row of the cube (a different one each time) written again
through ``write_items`` as it stands, so the commit writes a row as an add's does but no hit can move;
``--cold empty``: an empty write transaction instead (what this flag meant before the held maps were carried
across a store's own commits, :mod:`memos_integrations.storage.held_carry`).

    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.bench_engine_cpu --novel --cube /tmp/engine_cpu_cube \
        --convs 0,1,2,3,4 --save /tmp/novel_hits.json      # then, after a change: --compare /tmp/novel_hits.json
    BENCH_CALLERS="named_speakers|execute" ... --novel --profile search                # callers and callees too
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from memos_integrations import MemCube
from memos_integrations.textual.embed import MiniLMEmbedder
from memos_integrations.textual.expand import name_vector
from memos_integrations.textual.filters import MemoryFilter
from memos_integrations.textual.read import FastReader
from memos_integrations.textual.retrieve import BALANCED, DEEP, MULTIHOP
from memos_integrations.textual.shape_legs import names_time

from .common import locomo, sessions, table, turn_messages

PLANS = {"balanced": BALANCED, "deep": DEEP, "multihop": MULTIHOP}


def open_cube(where: Path, embedder: Any, conv: dict[str, Any]) -> MemCube:
    """The conversation's cube in ``where`` (built there on first use, reopened afterwards)."""
    path = where / conv["sample_id"]
    if path.exists():
        return MemCube.open(path, embedder=embedder)
    cube = MemCube.create(path, embedder=embedder)
    cube.text_mem.reader = FastReader(context_turns=1)
    for key, when, turns in sessions(conv):
        cube.add(messages=turn_messages(turns), user_id=conv["sample_id"], session_id=key, timestamp=when)
    return cube


def questions(conv: dict[str, Any], limit: int) -> list[str]:
    return [q["question"] for q in conv["qa"] if q["category"] != 5 and q.get("evidence")][:limit]


def search_cpu(cube: MemCube, qs: list[str], repeat: int) -> dict[str, float]:
    """Median (over passes) of the mean thread CPU ms per search, per plan."""
    out = {}
    for name, plan in PLANS.items():
        for q in qs:  # warm: embeddings cached, vectors cached
            cube.search(q, top_k=10, plan=plan)
        passes = []
        for _ in range(repeat):
            start = time.thread_time()
            for q in qs:
                cube.search(q, top_k=10, plan=plan)
            passes.append((time.thread_time() - start) * 1000 / len(qs))
        out[name] = statistics.median(passes)
    return out


def search_counts(cube: MemCube, qs: list[str]) -> dict[str, tuple[float, float, float]]:
    """Per search and plan, after a warm pass: SQL statements, rows fetched, ``json.loads`` calls
    (deterministic, unlike CPU time on a shared machine)."""
    db = cube.text_mem.store.db
    counts = [0, 0, 0]
    read, loads = db.read, json.loads

    def counted_read(sql: str, params: Any = ()) -> Any:
        rows = read(sql, params)
        counts[0] += 1
        counts[1] += len(rows)
        return rows

    def counted_loads(*a: Any, **kw: Any) -> Any:
        counts[2] += 1
        return loads(*a, **kw)

    out = {}
    for name, plan in PLANS.items():
        for q in qs:
            cube.search(q, top_k=10, plan=plan)
        counts[:] = [0, 0, 0]
        db.read, json.loads = counted_read, counted_loads  # type: ignore[method-assign]
        try:
            for q in qs:
                cube.search(q, top_k=10, plan=plan)
        finally:
            del db.read
            json.loads = loads
        out[name] = (counts[0] / len(qs), counts[1] / len(qs), counts[2] / len(qs))
    return out


def novel(where: Path, embedder: Any, convs: list[int], prof: cProfile.Profile | None = None,
          cold: str | None = None) -> tuple[list[float], dict[str, Any]]:
    """Thread CPU ms of each novel search (every question of ``convs`` once, balanced) and every hit;
    ``cold``: each search follows a commit to its cube ("write": one row written again as it stands, as
    an add's commit writes a row; "empty": an empty write transaction), so nothing held per commit (decoded
    rows, candidates) is warm and the held maps are what one written row leaves of them."""
    data = locomo()
    cubes = {c: open_cube(where, embedder, data[c]) for c in convs}
    asks = {c: questions(data[c], 10_000) for c in convs}
    vecs = {c: embedder.embed_queries(asks[c]) for c in convs}  # the embedding is not what is measured
    for c, cube in cubes.items():
        cube.search("what happened at the start of everything", top_k=10, plan=BALANCED)  # held rows, candidates
        for who in ("speaker_a", "speaker_b"):  # a speaker's name is embedded once per cube: not per search
            name_vector(cube.text_mem, data[c]["conversation"][who])
    rows = {c: cube.text_mem.store.candidate_rids(MemoryFilter(), -1) for c, cube in cubes.items()}
    cpu: list[float] = []
    hits: dict[str, Any] = {}
    for n in range(max(len(v) for v in asks.values())):
        for c, cube in cubes.items():
            if n >= len(asks[c]):
                continue
            q = asks[c][n]
            if cold:
                store = cube.text_mem.store
                if cold == "empty":
                    with store.transaction():
                        pass
                else:  # an add's commit: one row written (as it stands, so no hit moves)
                    rid = rows[c][n % len(rows[c])]
                    store.write_items([store.get_by_rid([rid])[rid]], None)
            if prof is not None:
                prof.enable()
            start = time.thread_time()
            found = cube.search(q, top_k=10, plan=BALANCED, query_vector=vecs[c][n])
            cpu.append((time.thread_time() - start) * 1000)
            if prof is not None:
                prof.disable()
            hits[f"{c}:{n}:{q}"] = [[h.item.id, repr(h.score), h.ranks] for h in found]
    for cube in cubes.values():
        cube.close()
    return cpu, hits


def novel_main(args: argparse.Namespace, embedder: Any) -> None:
    convs = [int(c) for c in args.convs.split(",")]
    prof = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        where = args.cube or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        cpu, hits = novel(where, embedder, convs, prof, args.cold)
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        if os.environ.get("BENCH_CALLERS"):  # e.g. BENCH_CALLERS="keyword_terms|execute"
            pstats.Stats(prof).sort_stats("tottime").print_callers(os.environ["BENCH_CALLERS"])
            pstats.Stats(prof).sort_stats("tottime").print_callees(os.environ["BENCH_CALLERS"])
    if args.save:
        args.save.write_text(json.dumps(hits, sort_keys=True))
    same = None
    if args.compare:
        before = json.loads(args.compare.read_text())
        diff = [k for k in before.keys() | hits.keys() if before.get(k) != hits.get(k)]
        same = f"{len(hits) - len(diff)}/{len(hits)} identical" + (f"; first differing: {sorted(diff)[:3]}" if diff else "")
    # time questions (a "when", or a period named) score every candidate's event time: shown apart
    timed = [c for c, key in zip(cpu, hits) if names_time(key.split(":", 2)[2])]
    others = [c for c, key in zip(cpu, hits) if not names_time(key.split(":", 2)[2])]
    slow = sorted(zip(cpu, hits), reverse=True)[: max(1, len(cpu) // 20)]
    share = sum(names_time(key.split(":", 2)[2]) for _, key in slow) / len(slow)
    print(f"novel searches (balanced{f', each after a commit ({args.cold})' if args.cold else ''}): convs {convs}, {len(cpu)} questions once each ({len(timed)} time questions); "
          f"load average {os.getloadavg()[0]:.2f}")
    rows = [[name, _pct(v, 50), _pct(v, 95), statistics.mean(v)] for name, v in
            (("all", cpu), ("time questions", timed), ("other questions", others)) if v]
    print(table(["thread CPU ms per novel search", "p50", "p95", "mean"], rows))
    print(f"time questions among the slowest 5% of searches: {share:.0%}")
    if same is not None:
        print(f"results vs {args.compare}: {same}")
        if "first differing" in same:
            raise SystemExit(1)


def _pct(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def add_cpu(cube: MemCube, n: int, threads: int) -> dict[str, float]:
    """Process CPU and wall ms per single-memory add, one at a time; then adds/s with ``threads`` at once."""
    cpu, wall = [], []
    for k in range(n):
        c0, w0 = time.process_time(), time.perf_counter()
        cube.add(memory=f"note {k}: the blue kettle is on the third shelf", user_id="bench")
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    per_thread = max(1, n // threads)

    def worker(t: int) -> None:
        for k in range(per_thread):
            cube.add(memory=f"thread {t} note {k}: a red umbrella hangs by the door", user_id="bench")

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    c0, w0 = time.process_time(), time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    total = per_thread * threads
    return {"cpu_ms": statistics.median(cpu), "wall_ms": statistics.median(wall),
            "conc_adds_per_s": total / (time.perf_counter() - w0),
            "conc_cpu_ms": (time.process_time() - c0) * 1000 / total}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cube", type=Path, default=None, help="folder for the cube (kept; reused when present)")
    ap.add_argument("--conv", type=int, default=0, help="which LoCoMo dev conversation")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--adds", type=int, default=60, help="0: searches only")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--profile", choices=["search", "add"], default=None)
    ap.add_argument("--novel", action="store_true", help="every question of --convs once (balanced)")
    ap.add_argument("--convs", default="0,1,2", help="--novel: which LoCoMo dev conversations")
    ap.add_argument("--cold", nargs="?", const="write", choices=["write", "empty"], default=None,
                    help="--novel: each search follows a commit that writes one row ('write', the default) or nothing ('empty')")
    ap.add_argument("--save", type=Path, default=None, help="--novel: write every hit to this JSON file")
    ap.add_argument("--compare", type=Path, default=None, help="--novel: check the hits against a --save file")
    args = ap.parse_args(argv)
    embedder = MiniLMEmbedder()
    if args.novel:
        novel_main(args, embedder)
        return
    conv = locomo()[args.conv]
    with tempfile.TemporaryDirectory() as tmp:
        where = args.cube or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        cube = open_cube(where, embedder, conv)
        qs = questions(conv, args.queries)
        if args.profile:
            prof = cProfile.Profile()
            if args.profile == "search":
                search_cpu(cube, qs, 1)
                prof.runcall(search_cpu, cube, qs, 1)
            else:
                prof.runcall(add_cpu, cube, args.adds, 1)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
            cube.close()
            return
        items = cube.text_mem.store.count()
        n = search_counts(cube, qs)
        s = search_cpu(cube, qs, args.repeat)
        a = add_cpu(cube, args.adds, args.threads) if args.adds else {}
        cube.close()
    rows = [[f"search ({p}), thread CPU ms", v] for p, v in s.items()]
    rows += [[f"search ({p}), SQL reads / rows read / json.loads", " / ".join(f"{x:.1f}" for x in c)] for p, c in n.items()]
    rows += [] if not a else [["add, process CPU ms (one at a time)", a["cpu_ms"]], ["add, wall ms (one at a time)", a["wall_ms"]],
             [f"adds/s, {args.threads} threads at once", a["conc_adds_per_s"]],
             [f"add, process CPU ms ({args.threads} threads)", a["conc_cpu_ms"]]]
    print(f"cube: {conv['sample_id']}, {items} items, {len(qs)} questions x {args.repeat} passes; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(table(["measure (median)", "value"], rows))


if __name__ == "__main__":
    main()
