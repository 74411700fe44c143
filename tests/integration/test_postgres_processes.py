# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
"""Writer and reader processes on one PostgreSQL cube (PostgresStore + pgvector): four writers and two
readers here; the eight-and-four run (twice the processes, ~15 s more on this machine) is
tests/stress/test_stress_postgres_processes.py (make stress), which calls the same check.

The workers are the concurrency suite's (tests/integration/concurrency_workers.py: adds, updates of
their own and of shared memories, deletes; readers search through the ANN path and log every hit),
and so is the check: every acknowledged version is in the history with its own content (nothing lost
or overwritten, versions 1..n without gaps or duplicates), no search returned a memory deleted
before it began, and the pgvector index holds exactly the live memories, each with its stored vector.
"""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import numpy as np

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig, postgres_store
from memos_integrations.items import utcnow
from tests.integration.concurrency_workers import (
    WORDS,
    HashEmbedder,
    check_against_truth,
    reader,
    readers_around_writers,
    writer,
)
from tests.pg_server import drop_schema, postgres_dsn  # noqa: F401


def test_four_writers_and_two_readers_on_one_postgres_cube(tmp_path: Path, postgres_dsn: str) -> None:
    writers_and_readers_on_one_postgres_cube(tmp_path, postgres_dsn, 4, 2)


def writers_and_readers_on_one_postgres_cube(tmp_path: Path, postgres_dsn: str, writers: int, readers: int) -> None:
    """Start ``writers`` writer and ``readers`` reader processes on a fresh schema, then check the truth."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    path = tmp_path / "pgcube"
    config = CubeConfig(store=postgres_store(postgres_dsn, schema=schema, max_size=3))
    try:
        with MemCube.init_from_dir(path, config, embedder=HashEmbedder()) as cube:
            assert cube.store.db.dialect == "postgres" and cube.config.vector.backend == "pgvector"
            shared = [i.id for i in cube.add(memory=[f"shared note about {w}" for w in WORDS[:5]], user_id="shared")]
        ctx = multiprocessing.get_context("spawn")
        logs = [tmp_path / f"w{k}.jsonl" for k in range(writers)] + [tmp_path / f"r{k}.jsonl" for k in range(readers)]
        writing = [ctx.Process(target=writer, args=(str(path), str(logs[k]), k, shared, 20, 90.0, k))
                   for k in range(writers)]
        stop = tmp_path / "stop"  # the readers search until the writers are done (at most 90 s)
        reading = [ctx.Process(target=reader, args=(str(path), str(logs[writers + k]), k, 90.0, 10 + k, str(stop)))
                   for k in range(readers)]
        readers_around_writers(reading, logs[writers:], writing, stop, 300)
        procs = writing + reading
        assert [p.exitcode for p in procs] == [0] * (writers + readers), "a worker failed or hung (see above)"
        finished = utcnow()
        with MemCube.open(path, embedder=HashEmbedder()) as cube:
            reconciles = [e for e in cube.audit_log(limit=1000) if e["action"] == "reconcile"]
            assert not [e for e in reconciles if e["at"] >= finished or e["detail"]["added"] or e["detail"]["removed"]]
            assert cube.store.outbox() == []
            counts = check_against_truth(cube, logs, shared=shared)
            assert counts["acknowledged"] >= writers * 15 and counts["searches"] > 0
            assert max(v.version for i in shared for v in cube.history(i)) > 2  # the shared memories were contended
            # each indexed vector is the one the truth keeps for that memory
            truth = cube.store.vectors_by_id(sorted(cube.index.ids()))
            rows = cube.store.db.read("SELECT id, embedding::text FROM vector_index")
            assert len(rows) == len(truth) == counts["live"]
            for item_id, text in rows:
                assert np.allclose(np.array(text.strip("[]").split(","), dtype=np.float32), truth[item_id], atol=1e-6)
            cube.text_mem.exact_search_max = 0
            live = {i.id for i in cube.get_all()}
            for w in WORDS:
                assert {h.item.id for h in cube.search(w, top_k=10)} <= live
    finally:
        drop_schema(postgres_dsn, schema)
