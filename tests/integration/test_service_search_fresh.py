"""Searches over HTTP never answer from a stale hold (issue 13's held dense candidates): a reader of a shared
cube sees the owner's new write, delete and move on the very next request, and loses the cube on unshare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from memos_integrations.mos import MOS
from memos_integrations.server import KeyStore, Limits, create_app


def test_a_reader_sees_every_change_on_the_next_search(tmp_path: Path, embedder: Any) -> None:
    mos = MOS(tmp_path / "home", embedder=embedder)
    for user in ("alice", "bob"):
        mos.create_user(user)
    mos.create_cube_for_user("notes", owner_id="alice")
    keys = KeyStore.open(mos.home / "mos.db")
    auth = {u: {"Authorization": f"Bearer {keys.create(u)[0]}"} for u in ("alice", "bob")}
    client = TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False))
    try:
        def add(text: str) -> str:
            r = client.post("/v1/memories", json={"text": text, "cube_id": "notes"}, headers=auth["alice"])
            assert r.status_code == 201, r.text
            return str(r.json()["items"][0]["id"])

        def found(query: str) -> list[str]:
            r = client.post("/v1/memories/search", json={"query": query, "cube_id": "notes", "k": 5}, headers=auth["bob"])
            assert r.status_code == 200, r.text
            return [h["item"]["id"] for h in r.json()["hits"]]

        for text in ("The boiler is serviced every May.", "Bob's bike is in the shed.", "The wifi password is on the fridge."):
            add(text)
        mos.share_cube_with_user("notes", "bob", "read", user_id="alice")
        assert found("where is the bike?")  # bob's searches now hold the cube's candidates
        kite = add("A red kite is stored above the garage door.")
        assert found("where is the kite?")[0] == kite
        assert client.delete(f"/v1/memories/{kite}", params={"cube_id": "notes"}, headers=auth["alice"]).status_code == 200
        assert kite not in found("where is the kite?")
        mos.unshare_cube("notes", "bob", user_id="alice")
        r = client.post("/v1/memories/search", json={"query": "bike", "cube_id": "notes"}, headers=auth["bob"])
        assert r.status_code == 404 and r.json()["error"]["type"] == "CubeNotFoundError"
    finally:
        client.close()
        keys.close()
        mos.close()
