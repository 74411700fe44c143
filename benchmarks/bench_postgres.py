"""SQLite cube vs PostgreSQL cube, side by side in one run (issue 11's targets).

Four parts, each a table:

1. **LoCoMo** (``--convs`` dev conversations, every turn a memory): ingest rate (embedding included)
   and search latency over the conversations' questions (query embedding included: the embedder's
   query cache is cleared before every pass), for the embedded cube (SQLite + persistent Chroma) and
   the PostgreSQL cube (PostgresStore + pgvector). Medians over ``--repeats`` passes.
2. **Concurrent writers**: single-memory adds per second, 1 process vs ``--writers`` processes on one
   PostgreSQL cube; the embedded cube's single writer beside it (an embedded cube is held by one
   process). Writers use a hashing embedder: this measures storage, not MiniLM.
3. **Scale** (``--scale-items`` synthetic unit vectors, 384 dimensions, 100 users, 2 kinds): bulk build
   time and disk of the pgvector HNSW index and of a persistent Chroma index, and filtered search p95
   (one user: ~1 % of the rows) and unfiltered p95 on each. The issue's target size is 1,000,000; the
   default here is what a small machine builds in minutes: say which size you ran.
4. **late** (``--only late``; PostgreSQL cubes): ingest with the ``late`` preset's token rows vs without
   them, and ``late`` vs ``learned`` search latency on the same cube.

    python -m benchmarks.bench_postgres [--convs 1] [--repeats 3] [--writers 8] [--seconds 10]
                                        [--scale-items 50000] [--queries 200] [--dsn postgresql://...]

Without ``--dsn`` (or ``MEMOS_BENCH_POSTGRES_DSN``) a throwaway PostgreSQL 16 + pgvector 0.6 from the
``pgserver`` package runs in ``bench_out/pg`` (unix socket; stopped at exit).
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import locomo, median, pct, sessions, table, turn_messages

DIM = 384


class HashEmbedder:
    """Bag of words hashed into 384 dimensions: the writer benchmark measures storage, not the model."""

    name = "hash-bench"
    dimension = DIM
    fingerprint = "hash384-bench-v1"

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.blake2b(word.encode(), digest_size=4).hexdigest(), 16) % DIM] += 1.0
            out[row, 0] += 1e-3
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def server_dsn(args: argparse.Namespace) -> str:
    dsn = args.dsn or os.environ.get("MEMOS_BENCH_POSTGRES_DSN")
    if dsn:
        return str(dsn)
    import pgserver

    home = Path(args.out).resolve() / "pg"
    home.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(home / "data"), cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    return str(server.get_uri())


def pg_config(dsn: str, **pool: Any) -> Any:
    from memos_integrations.config import CubeConfig, postgres_store

    return CubeConfig(store=postgres_store(dsn, schema=f"bench_{uuid.uuid4().hex[:10]}", **pool))


def drop(cube_config: Any) -> None:
    import psycopg

    store = cube_config.store
    if store.backend == "postgres":
        with psycopg.connect(store.connection_dsn(), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(store.schema_name)))


# -- 1. LoCoMo ------------------------------------------------------------------------------------------

def ingest_locomo(cube: Any, convs: Sequence[dict[str, Any]]) -> float:
    """Add every session of ``convs`` (user ``conv<i>``, one add per session); returns turns per second."""
    turns = 0
    start = time.perf_counter()
    for c, conv in enumerate(convs):
        for key, when, session in sessions(conv):
            msgs = turn_messages(session)
            cube.add(messages=msgs, user_id=f"conv{c}", session_id=f"conv{c}:{key}", timestamp=when)
            turns += len(msgs)
    return turns / (time.perf_counter() - start)


def bench_locomo(args: argparse.Namespace, dsn: str, work: Path) -> str:
    from memos_integrations import MemCube
    from memos_integrations.config import CubeConfig
    from memos_integrations.textual.embed import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    _ = embedder.fingerprint
    convs = locomo()[: args.convs]
    results: dict[str, dict[str, list[float]]] = {}
    for rep in range(args.repeats):
        for name, config in (("sqlite", CubeConfig()), ("postgres", pg_config(dsn))):
            cube = MemCube.init_from_dir(work / f"locomo_{name}_{rep}", config, embedder=embedder)
            try:
                ingest = ingest_locomo(cube, convs)
                embedder.clear_query_cache()
                lat = []
                for c, conv in enumerate(convs):
                    for qa in conv["qa"]:
                        start = time.perf_counter()
                        cube.search(str(qa["question"]), user_id=f"conv{c}", top_k=10)
                        lat.append(time.perf_counter() - start)
                r = results.setdefault(name, {"ingest": [], "p50": [], "p95": []})
                r["ingest"].append(ingest)
                r["p50"].append(pct(lat, 50) * 1000)
                r["p95"].append(pct(lat, 95) * 1000)
            finally:
                cube.close()
                drop(config)
    s, p = results["sqlite"], results["postgres"]
    rows = [
        ["ingest, turns/s (embedding included)", median(s["ingest"]), median(p["ingest"]),
         f"{median(p['ingest']) / median(s['ingest']):.2f}x (target >= 0.8x)"],
        ["search p50, ms (query embedding included)", median(s["p50"]), median(p["p50"]),
         f"{median(p['p50']) / median(s['p50']):.2f}x"],
        ["search p95, ms (query embedding included)", median(s["p95"]), median(p["p95"]),
         f"{median(p['p95']) / median(s['p95']):.2f}x (target <= 1.5x)"],
    ]
    n_q = sum(len(c["qa"]) for c in convs)
    return (f"LoCoMo dev, {len(convs)} conversation(s), {n_q} questions, medians of {args.repeats} passes\n\n"
            + table(["", "SQLite cube", "PostgreSQL cube", "PG / SQLite"], rows))


# -- 2. concurrent writers --------------------------------------------------------------------------------

def _writer(path: str, start_at: float, seconds: float, worker: int, out: str) -> None:
    from memos_integrations import MemCube

    cube = MemCube.open(path, embedder=HashEmbedder())
    n = 0
    try:
        time.sleep(max(0.0, start_at - time.time()))
        deadline = start_at + seconds
        while time.time() < deadline:
            cube.add(memory=f"writer {worker} note {n} about tea, rivers and kites", user_id=f"w{worker}")
            n += 1
    finally:
        cube.close()
    Path(out).write_text(str(n))


def run_writers(path: Path, processes: int, seconds: float, work: Path) -> float:
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 4.0 + processes  # every process is open and waiting when the clock starts
    outs = [work / f"w{uuid.uuid4().hex[:6]}.txt" for _ in range(processes)]
    procs = [ctx.Process(target=_writer, args=(str(path), start_at, seconds, k, str(outs[k]))) for k in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(seconds + 120)
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit("a writer process failed; see its traceback above")
    return sum(int(o.read_text()) for o in outs) / seconds


def bench_writers(args: argparse.Namespace, dsn: str, work: Path) -> str:
    from memos_integrations import MemCube
    from memos_integrations.config import CubeConfig

    rows = []
    for name, config in (("sqlite", CubeConfig()), ("postgres", pg_config(dsn, max_size=2))):
        path = work / f"writers_{name}"
        MemCube.init_from_dir(path, config, embedder=HashEmbedder()).close()
        try:
            one = [run_writers(path, 1, args.seconds, work) for _ in range(args.repeats)]
            if name == "sqlite":
                rows.append(["SQLite cube (one writer process holds it)", median(one), "-", "-"])
                continue
            many = [run_writers(path, args.writers, args.seconds, work) for _ in range(args.repeats)]
            rows.append([f"PostgreSQL cube, 1 vs {args.writers} processes", median(one), median(many),
                         f"{median(many) / median(one):.2f}x (target >= 3x)"])
        finally:
            drop(config)
    return (f"single-memory adds/s, {args.seconds:g} s per run, medians of {args.repeats} runs, hashing embedder, "
            f"{os.cpu_count()} CPU cores\n\n" + table(["", "1 writer", f"{args.writers} writers", "scaling"], rows))


# -- 3. scale --------------------------------------------------------------------------------------------

def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_scale(args: argparse.Namespace, dsn: str, work: Path) -> str:
    from memos_integrations.storage.base import IndexRow, VectorFilter
    from memos_integrations.storage.chroma import ChromaIndex
    from memos_integrations.storage.pgvector import PgVectorIndex
    from memos_integrations.storage.postgres import PostgresDatabase

    n = args.scale_items
    rng = np.random.default_rng(0)
    rows = [IndexRow(f"m{i}", user_id=f"u{i % 100}", kind="fact" if i % 2 else "message", state="activated")
            for i in range(n)]
    queries = rng.standard_normal((args.queries, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def vectors(start: int, stop: int) -> np.ndarray:
        v = np.random.default_rng(start).standard_normal((stop - start, DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    out = []
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    db = PostgresDatabase(dsn, schema=schema)
    chroma_dir = work / "scale_chroma"
    try:
        for name in ("pgvector (HNSW)", "Chroma (persistent)"):
            index: Any = (PgVectorIndex(db, dim=DIM, maintenance_work_mem=args.maintenance_work_mem)
                          if name.startswith("pg") else ChromaIndex.persistent(chroma_dir, "scale"))
            start = time.perf_counter()
            batches = ((rows[i:i + 5000], vectors(i, min(n, i + 5000))) for i in range(0, n, 5000))
            if name.startswith("pg"):
                index.load(batches)  # one bulk load: HNSW built once
            else:
                for batch_rows, batch_vectors in batches:
                    index.upsert(batch_rows, batch_vectors)
            build = time.perf_counter() - start
            disk = index.disk_bytes() if name.startswith("pg") else _dir_bytes(chroma_dir)
            lat_f: list[float] = []
            lat_u: list[float] = []
            for j, q in enumerate(queries):
                t = time.perf_counter()
                got = index.query(q, 10, VectorFilter(user_id=(f"u{j % 100}",)))
                lat_f.append(time.perf_counter() - t)
                assert len(got) == 10, f"{name} returned {len(got)} of 10 under a 1 % filter"
                t = time.perf_counter()
                index.query(q, 10)
                lat_u.append(time.perf_counter() - t)
            out.append([name, f"{build:.1f} s", f"{disk / 2**20:.0f} MiB", pct(lat_f, 50) * 1000, pct(lat_f, 95) * 1000,
                        pct(lat_u, 95) * 1000])
    finally:
        db.close()
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(schema)))
        shutil.rmtree(chroma_dir, ignore_errors=True)
    return (f"{n:,} synthetic unit vectors ({DIM} dims, 100 users), k = 10, {args.queries} queries; filter = one user "
            "(~1 % of rows); target: filtered p95 <= 50 ms at 1,000,000\n\n"
            + table(["index", "build", "disk", "filtered p50 ms", "filtered p95 ms", "unfiltered p95 ms"], out))


# -- 4. the late preset on PostgreSQL --------------------------------------------------------------------

def bench_late(args: argparse.Namespace, dsn: str, work: Path) -> str:
    """Ingest on a PostgreSQL cube with the late preset's token rows vs without them (the capture of the
    pass's token vectors stays; the content-token selection, quantisation and rows go), then search latency
    of ``late`` vs ``learned`` on that cube and, beside it, on an SQLite cube with the same content (each
    plan a whole pass over the questions, query cache cleared first, plans and modes alternated)."""
    from memos_integrations import MemCube
    from memos_integrations.config import CubeConfig
    from memos_integrations.storage.tables import late_tokens
    from memos_integrations.textual import late
    from memos_integrations.textual.embed import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    _ = embedder.fingerprint
    convs = locomo()[: args.convs]
    stash, written = late.stash, late_tokens.written_many
    ingest: dict[str, list[float]] = {"pg without": [], "pg with": [], "sqlite with": []}
    lat: dict[tuple[str, str], dict[str, list[float]]] = {}
    rows: dict[str, int] = {}
    for rep in range(args.repeats):
        modes = ["pg with", "pg without", "sqlite with"]
        for mode in (modes if rep % 2 == 0 else modes[::-1]):  # alternated: drift cancels
            config = pg_config(dsn) if mode.startswith("pg") else CubeConfig()
            if mode.endswith("without"):
                late.stash = lambda *a, **kw: None  # type: ignore[assignment]
                late_tokens.written_many = lambda *a, **kw: None  # type: ignore[assignment]
            cube = MemCube.init_from_dir(work / f"late_{mode.replace(' ', '_')}_{rep}", config, embedder=embedder)
            try:
                ingest[mode].append(ingest_locomo(cube, convs))
                late.stash, late_tokens.written_many = stash, written  # type: ignore[assignment]
                if mode.endswith("without"):
                    continue
                store = mode.split()[0]
                rows[store] = late_tokens.count(cube.text_mem.store)
                for plan in (("learned", "late") if rep % 2 == 0 else ("late", "learned")):
                    embedder.clear_query_cache()
                    took = []
                    for c, conv in enumerate(convs):
                        for qa in conv["qa"]:
                            start = time.perf_counter()
                            cube.search(str(qa["question"]), user_id=f"conv{c}", top_k=10, plan=plan)
                            took.append(time.perf_counter() - start)
                    r = lat.setdefault((store, plan), {"p50": [], "p95": []})
                    r["p50"].append(pct(took, 50) * 1000)
                    r["p95"].append(pct(took, 95) * 1000)
            finally:
                late.stash, late_tokens.written_many = stash, written  # type: ignore[assignment]
                cube.close()
                drop(config)
    w, wo, lw = (median(ingest[m]) for m in ("pg with", "pg without", "sqlite with"))
    out = [["ingest, turns/s (embedding included): PG without token rows", f"{wo:.1f}", "", ""],
           ["ingest, turns/s: PG with token rows / SQLite with", f"{w:.1f} ({w / wo:.2f}x without)", f"{lw:.1f}", ""]]
    for q in ("p50", "p95"):
        pg = [median(lat[("pg", p)][q]) for p in ("learned", "late")]
        lite = [median(lat[("sqlite", p)][q]) for p in ("learned", "late")]
        out.append([f"search {q}, ms (query embedding included): learned", f"{pg[0]:.1f}", f"{lite[0]:.1f}", ""])
        out.append([f"search {q}, ms: late", f"{pg[1]:.1f}", f"{lite[1]:.1f}",
                    f"PG {pg[1] / pg[0]:.2f}x, SQLite {lite[1] / lite[0]:.2f}x"])
    n_q = sum(len(c["qa"]) for c in convs)
    return (f"LoCoMo dev, {len(convs)} conversation(s), {n_q} questions, late_tokens rows: {rows}, medians of "
            f"{args.repeats} passes\n\n" + table(["", "PostgreSQL cube (pgvector)", "SQLite cube", "late / learned"], out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--convs", type=int, default=1, help="LoCoMo dev conversations to ingest")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each writer run")
    ap.add_argument("--scale-items", type=int, default=50_000, help="synthetic vectors (the issue's target: 1000000)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--maintenance-work-mem", default="512MB", help="PostgreSQL memory for the HNSW build")
    ap.add_argument("--dsn", default=None, help="a PostgreSQL server with pgvector (default: a pgserver one)")
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--only", choices=["locomo", "writers", "scale", "late"], action="append")
    args = ap.parse_args()
    dsn = server_dsn(args)
    Path(args.out).mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pgbench-", dir=args.out))
    try:
        for part, fn in (("locomo", bench_locomo), ("writers", bench_writers), ("scale", bench_scale),
                         ("late", bench_late)):
            if args.only and part not in args.only:
                continue
            print(f"\n### {part}\n\n{fn(args, dsn, work)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
