# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
"""Eight writer processes and four readers on one PostgreSQL cube: the integration suite's check
(tests/integration/test_postgres_processes.py, four writers and two readers there) with twice the
processes contending for the shared memories and the pgvector index. ~40 s on a busy 2-core machine."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_postgres_processes import writers_and_readers_on_one_postgres_cube
from tests.pg_server import postgres_dsn  # noqa: F401


def test_eight_writers_and_four_readers_on_one_postgres_cube(tmp_path: Path, postgres_dsn: str) -> None:
    writers_and_readers_on_one_postgres_cube(tmp_path, postgres_dsn, 8, 4)
