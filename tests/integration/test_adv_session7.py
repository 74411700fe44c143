"""Adversary, session 7: the fast fronts of the hot routes, durable idempotency, staged writes, id bounds.

Each test is the hostile request first; where the fast front and the FastAPI route can both answer it,
both are sent (an unknown query parameter sends a GET to FastAPI) and must agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402


class Home:
    def __init__(self, home: Path, embedder: Any, limits: Limits, *, mcp: bool = False) -> None:
        self.mos = MOS(home, embedder=embedder)
        for user in ("alice", "bob"):
            self.mos.create_user(user)
        self.keys = KeyStore.open(home / "mos.db")
        self.tokens = {u: self.keys.create(u)[0] for u in ("alice", "bob")}
        self.tokens["alice-bot"] = self.keys.create("alice", agent_id="bot")[0]
        self.client = TestClient(create_app(self.mos, keys=self.keys, limits=limits, mcp=mcp))

    def h(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}

    def close(self) -> None:
        self.client.close()
        self.keys.close()
        self.mos.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Home]:
    h = Home(tmp_path_factory.mktemp("adv7") / "home", embedder, Limits(rate=0, max_body_bytes=64 * 1024))
    r = h.client.post("/v1/memories", json={"text": "Alice's favourite tea is genmaicha."}, headers=h.h("alice"))
    assert r.status_code == 201, r.text
    yield h
    h.close()


@pytest.mark.parametrize("extra", ["", "&unknown=1"])  # the fast front, then FastAPI
def test_get_search_with_a_session_id_over_the_bound_is_a_422_not_a_500(home: Home, extra: str) -> None:
    r = home.client.get(f"/v1/memories/search?q=tea&session_id={'s' * 300}{extra}", headers=home.h("alice"))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "InvalidInputError" or "session_id" in r.text


def test_another_users_add_with_the_same_idempotency_key_is_its_own_write(home: Home) -> None:
    cube = home.client.get("/v1/users/me", headers=home.h("alice")).json()["cubes"][0]["cube_id"]
    assert home.client.post(f"/v1/cubes/{cube}/share", json={"user_id": "bob", "access": "write"},
                            headers=home.h("alice")).status_code == 200
    body = {"text": "the vault code is 4711", "cube_id": cube}
    first = home.client.post("/v1/memories", json=body, headers=home.h("alice", **{"Idempotency-Key": "k-1"}))
    assert first.status_code == 201, first.text
    second = home.client.post("/v1/memories", json=body, headers=home.h("bob", **{"Idempotency-Key": "k-1"}))
    assert second.status_code == 201, second.text
    assert second.json()["items"][0]["id"] != first.json()["items"][0]["id"]
    # the same user's other agent: its own write, or a 409; never the first agent's answer
    third = home.client.post("/v1/memories", json=body, headers=home.h("alice-bot", **{"Idempotency-Key": "k-1"}))
    assert third.status_code in (201, 409), third.text
    if third.status_code == 201:
        assert third.json()["items"][0]["id"] != first.json()["items"][0]["id"]


def test_list_with_a_session_id_over_the_bound_is_refused(home: Home) -> None:
    r = home.client.get(f"/v1/memories?session_id={'s' * 300}", headers=home.h("alice"))
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(("tool", "args"), [
    ("add_memory", {"text": "a note", "session_id": "s" * 300}),
    ("search_memory", {"query": "note", "session_id": "s" * 300}),
    ("give_feedback", {"text": "that was wrong", "session_id": "s" * 300}),
    ("give_feedback", {"text": "that was wrong", "cube_id": "c" * 300}),
])
async def test_mcp_tools_bound_session_and_cube_ids_as_rest_does(tmp_path: Path, embedder: Any, tool: str,
                                                                 args: dict[str, Any]) -> None:
    pytest.importorskip("mcp")
    from mcp import Client

    from memos_integrations.server.mcp import build_server

    mos = MOS(tmp_path / "home", embedder=embedder)
    mos.create_user("alice")
    try:
        async with Client(build_server(mos, lambda headers: "alice")) as client:
            result = await client.call_tool(tool, args)
        assert result.is_error, result
        assert "at most 256" in str(result.content[0]), result
        assert not [m for g in mos.get_all(user_id="alice")["text_mem"] for m in g["memories"]]
    finally:
        mos.close()


def test_concurrent_retries_of_one_keyed_add_write_it_once(home: Home) -> None:
    from concurrent.futures import ThreadPoolExecutor

    body = {"text": "the boiler was serviced on Tuesday", "session_id": "retry"}

    def send(_: int) -> Any:
        return home.client.post("/v1/memories", json=body, headers=home.h("alice", **{"Idempotency-Key": "race-1"}))

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(6)))
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    assert len({r.json()["items"][0]["id"] for r in answers}) == 1
    listed = home.client.get("/v1/memories?session_id=retry", headers=home.h("alice")).json()["items"]
    assert len(listed) == 1


def test_the_learned_preset_through_the_service_keeps_scope_filters_and_as_of(home: Home) -> None:
    bob = home.client.post("/v1/memories", json={"text": "Bob's cat Miso sleeps on the piano"}, headers=home.h("bob"))
    assert bob.status_code == 201, bob.text
    mine = home.client.post("/v1/memories", json={"text": "Alice's cat is called Tofu", "session_id": "pets",
                                                  "tags": ["cat"]}, headers=home.h("alice"))
    assert mine.status_code == 201, mine.text

    def search(**body: Any) -> list[dict[str, Any]]:
        r = home.client.post("/v1/memories/search", json={"query": "what is the cat called", "plan": "learned", **body},
                             headers=home.h("alice"))
        assert r.status_code == 200, r.text
        return [h["item"] for h in r.json()["hits"]]

    assert "Miso" not in str(search(k=50))  # bob's own cube is not alice's to search
    assert {i["session_id"] for i in search(session_id="pets")} == {"pets"}
    assert all("cat" in i["tags"] for i in search(tags=["cat"]))
    assert search(as_of="2000-01-01T00:00:00Z") == []
    assert len(search(query="cat " * 15_000)) >= 1  # a pasted log as the query: answered, not a 500


def test_cors_and_request_ids_on_fast_answers(tmp_path: Path, embedder: Any) -> None:
    h = Home(tmp_path / "home", embedder, Limits(rate=0, cors_origins=("https://app.example",)))
    try:
        origin = {"Origin": "https://app.example"}
        for r in (h.client.get("/v1/memories/search?q=tea", headers=h.h("alice", **origin)),
                  h.client.post("/v1/memories", json={"text": "a note"}, headers=h.h("alice", **origin))):
            assert r.status_code in (200, 201), r.text
            assert r.headers["access-control-allow-origin"] == "https://app.example"
            assert r.headers["x-request-id"]
        other = h.client.get("/v1/memories/search?q=tea", headers=h.h("alice", Origin="https://evil.example"))
        assert "access-control-allow-origin" not in other.headers
    finally:
        h.close()


def test_only_the_key_that_staged_a_write_can_release_it(home: Home) -> None:
    lc = "/v1/vector-stores/langchain/add"
    stage = "adv7-stage-0001"
    first = home.client.post(lc, json={"texts": ["part one"], "stage": stage, "part": 0}, headers=home.h("alice"))
    assert first.json() == {"staged": 0}, first.text
    for other in ("bob", "alice-bot"):  # another user, and another key of the same user
        r = home.client.delete(f"/v1/vector-stores/stages/{stage}", headers=home.h(other))
        assert r.status_code == 200 and r.json() == {"released": 0}, r.text
    last = home.client.post(lc, json={"texts": ["part two"], "stage": stage, "part": 1, "parts": 2},
                            headers=home.h("alice"))
    assert last.status_code == 200 and len(last.json()["ids"]) == 2, last.text
    # the same stage id from another user is that user's own write, never answered with alice's
    theirs = home.client.post(lc, json={"texts": ["part two"], "stage": stage, "part": 0, "parts": 1},
                              headers=home.h("bob"))
    assert theirs.status_code == 200 and set(theirs.json()["ids"]).isdisjoint(last.json()["ids"]), theirs.text


def test_a_rate_limited_mcp_request_is_a_429_with_retry_after_not_a_401(tmp_path: Path, embedder: Any) -> None:
    """The /mcp endpoint answered every refusal of its key check 401 (``WWW-Authenticate: Bearer``), the rate
    limit's too: a client was told its key was bad instead of when to retry."""
    pytest.importorskip("mcp")
    h = Home(tmp_path / "home", embedder, Limits(rate=0.01, burst=1), mcp=True)
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = h.h("alice", Accept="application/json, text/event-stream")
    try:
        with h.client:  # the app's lifespan runs the MCP session manager
            first = h.client.post("/mcp/", json=ping, headers=headers)
            assert first.status_code != 429, first.text
            second = h.client.post("/mcp/", json=ping, headers=headers)
            assert second.status_code == 429, second.text
            assert int(second.headers["retry-after"]) >= 1
            assert second.json()["error"]["type"] == "RateLimitedError"
            wrong = h.client.post("/mcp/", json=ping, headers={"Authorization": "Bearer mk_nope_nope"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    finally:
        h.close()


def test_a_proxys_basic_authorization_does_not_hide_the_api_key() -> None:
    """A proxy that adds ``Authorization: Basic ...`` must not turn a valid ``X-API-Key`` into a 401; a Bearer
    header, valid or not, is the key the client chose and always wins."""
    from memos_integrations.server.auth import token_of

    assert token_of({"authorization": "Basic YWxpY2U6cHc=", "x-api-key": "k1"}) == "k1"
    assert token_of({"authorization": "Bearer k2", "x-api-key": "k1"}) == "k2"
    assert token_of({"authorization": "Bearer ", "x-api-key": "k1"}) is None
    assert token_of({"authorization": "Basic YWxpY2U6cHc="}) is None
