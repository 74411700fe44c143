"""Adversary (session 9b): a long session's content-defined parts on a PostgreSQL-backed cube.

The same turns give the same parts (ids, sources, part numbers) on PostgreSQL as on SQLite, deleting an early
turn rewrites only the parts around it there too, and the before-chain keeps the parts in insertion order."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from memos_integrations import CubeConfig, MemCube
from memos_integrations.config import postgres_store
from memos_integrations.organize import organize
from tests.pg_server import pg_schema, postgres_dsn  # noqa: F401 - fixtures by name

sys.path.insert(0, str(Path(__file__).parent.parent / "unit"))
from test_parts9_stable_parts import SMALL, Counting, chat, shape, sound  # noqa: E402


def test_parts_on_postgres_match_sqlite_and_an_edit_stays_local(tmp_path: Path, postgres_dsn: str,  # noqa: F811
                                                               pg_schema: str, embedder: Any) -> None:  # noqa: F811
    config = CubeConfig(store=postgres_store(postgres_dsn, schema=pg_schema))
    with MemCube.init_from_dir(tmp_path / "pg", config, embedder=embedder) as pg, \
            MemCube.init_from_dir(tmp_path / "lite", embedder=embedder) as lite:
        shapes = []
        for cube in (pg, lite):
            turns = chat(cube, 85)
            organize(cube, reader=Counting(), policy=SMALL)
            sound(cube, turns, 10)
            shapes.append(shape(cube))
        assert shapes[0] == shapes[1] and len(shapes[0]) >= 6
        for cube in (pg, lite):
            cube.delete(["turn-0005"])
            reader = Counting()
            report = organize(cube, reader=reader, policy=SMALL)
            assert report.episodes_written <= 2, report
        assert shape(pg) == shape(lite)
