"""Adversary, session 9: ``POST /v1/faces/conflicts`` on a service whose cube lives in PostgreSQL.

An id the cube cannot hold is no notes (the route's contract), on every store: PostgreSQL's text cannot hold
a NUL character, and such an id reached ``get_items`` and came back as a 500 ("a bug, not your input")
where the SQLite-backed service answers ``{"conflicts": {}}``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from memos_integrations import MOS, CubeConfig
from memos_integrations.config import postgres_store
from memos_integrations.errors import InvalidInputError
from memos_integrations.server import KeyStore, Limits, create_app
from tests.integration.test_remote_cube import serve
from tests.pg_server import pg_schema, postgres_dsn  # noqa: F401 - fixtures by name


def test_a_nul_id_is_no_notes_on_postgres(tmp_path: Path, postgres_dsn: str, pg_schema: str,  # noqa: F811
                                          embedder: Any) -> None:
    mos = MOS(tmp_path / "home", embedder=embedder)
    keys = KeyStore.open(tmp_path / "home" / "mos.db")
    mos.create_user("alice")
    mos.create_cube_for_user("pg", owner_id="alice", config=CubeConfig(store=postgres_store(postgres_dsn, schema=pg_schema)))
    held = mos._cube("pg").add(memory="I live in Lisbon.", user_id="alice")[0]
    key = keys.create("alice")[0]
    url, stop = serve(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False))  # type: ignore[misc]
    try:
        for ids in (["a\u0000b"], [held.id, "\u0000"], [held.id]):
            answer = httpx.post(url + "/v1/faces/conflicts", json={"cube_id": "pg", "ids": ids},
                                headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200 and answer.json() == {"conflicts": {}}, answer.text
    finally:
        stop()
        mos.close()


def test_a_nul_in_other_routes_is_not_a_500_on_postgres(tmp_path: Path, postgres_dsn: str,  # noqa: F811
                                                        pg_schema: str, embedder: Any) -> None:  # noqa: F811
    """psycopg refuses a NUL in any text before sending (a DataError, no MemosError): GET /v1/memories/a%00b was
    a 500 and a search whose session_id held NUL failed inside the app. Now a 422 that names the NUL, and an
    add holding one writes nothing."""
    mos = MOS(tmp_path / "home", embedder=embedder)
    keys = KeyStore.open(tmp_path / "home" / "mos.db")
    mos.create_user("alice")
    mos.create_cube_for_user("pg", owner_id="alice", config=CubeConfig(store=postgres_store(postgres_dsn, schema=pg_schema)))
    mos._cube("pg").add(memory="I live in Lisbon.", user_id="alice")
    auth = {"Authorization": f"Bearer {keys.create('alice')[0]}"}
    url, stop = serve(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False))  # type: ignore[misc]
    try:
        got = httpx.get(url + "/v1/memories/a%00b?cube_id=pg", headers=auth)
        assert got.status_code in (404, 422) and "NUL" in got.text, got.text
        found = httpx.post(url + "/v1/memories/search", json={"cube_id": "pg", "query": "where", "session_id": "a\u0000"},
                           headers=auth)
        assert found.status_code == 422 and "NUL" in found.text, found.text
        cube = mos._cube("pg")
        before = len(cube.get_all(user_id="alice"))
        with pytest.raises(InvalidInputError, match="NUL"):
            cube.add(memory="I live in\u0000 Porto.", user_id="alice")
        assert len(cube.get_all(user_id="alice")) == before
    finally:
        stop()
        mos.close()
