# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
"""Two processes writing to one session of a shared cube (a Chroma server holds the vectors; or
PostgreSQL, where writers run in parallel and the settles take an advisory lock): no item is lost and
the session's working memory ends at its capacity, the newest kept (issue 14)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig, postgres_store
from memos_integrations.config import chroma_server as server_config
from memos_integrations.organize import WORKING, partition_of
from tests.integration.concurrency_workers import HashEmbedder
from tests.pg_server import drop_schema, postgres_dsn  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]

_WRITER = textwrap.dedent("""
    import sys
    from memos_integrations import MemCube
    from tests.integration.concurrency_workers import HashEmbedder
    with MemCube.open(sys.argv[1], embedder=HashEmbedder()) as cube:
        for k in range(25):
            cube.add(memory=f"Process {sys.argv[2]} says thing {k}.", user_id="u", session_id="s")
""")


def test_two_processes_writing_to_one_session(chroma_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    host, port = chroma_server
    path = tmp_path / "served"
    MemCube.init_from_dir(path, server_config(host, port, cube_id="sched7"), embedder=HashEmbedder()).close()
    two_writers_then_check(path)


def test_two_processes_writing_to_one_session_on_postgres(tmp_path: Path, postgres_dsn: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    path = tmp_path / "pgcube"
    try:
        config = CubeConfig(store=postgres_store(postgres_dsn, schema=schema, max_size=3))
        MemCube.init_from_dir(path, config, embedder=HashEmbedder()).close()
        two_writers_then_check(path)
    finally:
        drop_schema(postgres_dsn, schema)


def two_writers_then_check(path: Path) -> None:
    runs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for tag in "ab"]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    with MemCube.open(path, embedder=HashEmbedder()) as cube:
        items = sorted(cube.get_all(user_id="u", session_id="s", limit=100), key=lambda i: (i.created_at, i.id))
        assert len(items) == 50                                             # no item lost
        assert [i.id for i in items if partition_of(i) == WORKING] == [i.id for i in items[-20:]]
