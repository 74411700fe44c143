"""Adversary checks of the memory service: forged cursors, odd times, keys. Each test failed before its fix."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from memos_integrations.langchain.standin import StandInChatModel  # noqa: E402
from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402


class Svc:
    def __init__(self, home: Path, embedder: Any) -> None:
        self.mos = MOS(home, embedder=embedder, chat_model=StandInChatModel())
        for user in ("alice", "bob"):
            self.mos.create_user(user)
        self.keys = KeyStore.open(home / "mos.db")
        self.tokens = {u: self.keys.create(u)[0] for u in ("alice", "bob")}
        self.client = TestClient(create_app(self.mos, keys=self.keys, limits=Limits(rate=0), mcp=False),
                                 raise_server_exceptions=False)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def close(self) -> None:
        self.client.close()
        self.keys.close()
        self.mos.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Svc]:
    s = Svc(tmp_path_factory.mktemp("adv_service") / "home", embedder)
    r = s.client.post("/v1/memories", json={"text": "Alice keeps her bike in the blue shed."}, headers=s.h("alice"))
    assert r.status_code == 201, r.text
    yield s
    s.close()


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("forged", ["o:" + "9" * 40, "o:" + "9" * 19, "o:٣"])
def test_a_forged_cursor_is_a_422_or_a_page_never_a_500(svc: Svc, forged: str) -> None:
    r = svc.client.get(f"/v1/memories?cursor={_cursor(forged)}", headers=svc.h("alice"))
    assert r.status_code in (200, 422), r.text
    if r.status_code == 200:
        assert r.json()["items"] == [] or forged == "o:٣"


@pytest.mark.parametrize("as_of", ["2020-01-01T00:00:00", "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00-05:00",
                                   "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59-14:00"])
def test_search_as_of_at_the_edges_of_time_is_an_answer_not_a_500(svc: Svc, as_of: str) -> None:
    r = svc.client.post("/v1/memories/search", json={"query": "bike", "as_of": as_of}, headers=svc.h("alice"))
    assert r.status_code in (200, 422), r.text


def test_a_key_for_a_user_mos_does_not_know_reaches_nothing_and_creates_nothing(svc: Svc) -> None:
    token, _ = svc.keys.create("ghost")
    h = {"Authorization": f"Bearer {token}"}
    for method, url, body in (("GET", "/v1/memories", None), ("POST", "/v1/memories", {"text": "ghost note"}),
                              ("POST", "/v1/memories/search", {"query": "bike"}), ("GET", "/v1/cubes", None)):
        r = svc.client.request(method, url, json=body, headers=h)
        assert r.status_code < 500, (url, r.text)
        assert "blue shed" not in r.text


@pytest.mark.parametrize("item_id", ["..%2F..%2Fmos.db", "%E2%80%AE", "a" * 5000, "%00"])
def test_odd_item_ids_in_the_path_are_a_4xx(svc: Svc, item_id: str) -> None:
    r = svc.client.get(f"/v1/memories/{item_id}", headers=svc.h("alice"))
    assert 400 <= r.status_code < 500, r.text
