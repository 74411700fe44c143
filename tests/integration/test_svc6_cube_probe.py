"""Another user's cube and a cube that does not exist are one refusal by the same path (server/service.Service.guard):
the service never opens the other user's cube nor writes into its audit log for a caller who cannot reach it (which
made an existing cube id cost 65 against 16 us, and 26 ms the first time, so a caller could time which ids exist)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402


@pytest.fixture
def probed(tmp_path: Path) -> Iterator[tuple[MOS, KeyStore, dict[str, str]]]:
    home = tmp_path / "home"
    with MOS(home, embedder=DeterministicFakeEmbedding(size=6)) as setup:
        for user in ("alice", "bob"):
            setup.create_user(user)
            setup.create_cube_for_user(f"{user}-c", owner_id=user)
        setup.add(memory_content="the safe code is 1234", mem_cube_id="alice-c", user_id="alice")
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))  # a fresh process: no cube open yet
    keys = KeyStore.open(home / "mos.db")
    try:
        yield mos, keys, {"Authorization": f"Bearer {keys.create('bob')[0]}"}
    finally:
        keys.close()
        mos.close()


def _refusal(r: Any, cube: str) -> tuple[int, str, str]:
    error = r.json()["error"]
    return r.status_code, error["type"], error["message"].replace(cube, "<cube>")


@pytest.mark.parametrize("fast_path", [True, False])
def test_another_users_cube_is_refused_as_no_cube_without_opening_or_writing_it(
        probed: tuple[MOS, KeyStore, dict[str, str]], fast_path: bool) -> None:
    mos, keys, bob = probed
    with TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False, fast_path=fast_path)) as http:
        answers = {}
        for cube in ("alice-c", "no-such-c"):
            answers[cube] = [_refusal(http.get("/v1/memories/search", params={"q": "code", "cube_id": cube}, headers=bob),
                                      cube),
                             _refusal(http.post("/v1/memories", json={"text": "x", "cube_id": cube}, headers=bob), cube),
                             _refusal(http.get("/v1/memories", params={"cube_id": cube}, headers=bob), cube),
                             _refusal(http.post(f"/v1/cubes/{cube}/share", json={"user_id": "bob", "access": "read"},
                                                headers=bob), cube)]
        assert answers["alice-c"] == answers["no-such-c"]
        assert {a[:2] for a in answers["alice-c"]} == {(404, "CubeNotFoundError")}
        assert "alice-c" not in mos._cubes  # never opened for bob
    audit = [e for e in keys.audit_log(100) if e["action"] == "open" and not e["allowed"]]
    assert sorted(e["target"] for e in audit) == ["alice-c"] * 4 + ["no-such-c"] * 4  # the same row for both
    assert {e["principal"] for e in audit} == {"bob"}
    assert [e for e in mos.cube("alice-c", user_id="alice").audit_log(100) if not e.get("allowed", True)] == []


def test_a_cube_shared_for_reading_still_refuses_a_write_as_mos_does(probed: tuple[MOS, KeyStore, dict[str, str]]) -> None:
    """A cube the user reaches is MOS's to check, as before: a write on a read share is a 403, audited in the cube."""
    mos, keys, bob = probed
    mos.share_cube_with_user("alice-c", "bob", "read", user_id="alice")
    with TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False)) as http:
        assert http.get("/v1/memories/search", params={"q": "code", "cube_id": "alice-c"}, headers=bob).status_code == 200
        r = http.post("/v1/memories", json={"text": "x", "cube_id": "alice-c"}, headers=bob)
        assert r.status_code == 403 and r.json()["error"]["type"] == "AccessDeniedError"
    assert any(not e.get("allowed", True) for e in mos.cube("alice-c", user_id="alice").audit_log(100))
