"""The hot routes' fast fronts (server/fastpath.py): the same answers as the FastAPI routes, errors included.

Each test sends the request twice where it can: once as the front vouches for it, once made slightly
unusual in a way FastAPI ignores (an unknown query parameter, a ``charset`` in the content type), so the
FastAPI route answers; the two answers must agree. A counter on FastAPI's dependency solving shows which
path answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

import fastapi.routing  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.server.fastpath import _search_query  # noqa: E402


class Home:
    def __init__(self, home: Path, embedder: Any) -> None:
        self.mos = MOS(home, embedder=embedder)
        for user in ("alice", "bob"):
            self.mos.create_user(user)
        self.keys = KeyStore.open(home / "mos.db")
        self.tokens = {u: self.keys.create(u)[0] for u in ("alice", "bob")}
        revoked, info = self.keys.create("alice")
        self.keys.revoke(info.key_id)
        self.tokens["revoked"] = revoked
        self.client = TestClient(create_app(self.mos, keys=self.keys, limits=Limits(rate=0, max_body_bytes=4096),
                                            mcp=False))

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Home]:
    h = Home(tmp_path_factory.mktemp("fastpath") / "home", embedder)
    for text in ("Alice's favourite tea is genmaicha.", "Alice walks her dog at seven.", "The spare key is under the fern."):
        r = h.client.post("/v1/memories", json={"text": text}, headers=h.h("alice"))
        assert r.status_code == 201, r.text
    yield h
    h.client.close()
    h.keys.close()
    h.mos.close()


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests went through FastAPI's dependency solving (the slow path)."""
    calls: list[int] = []
    real = fastapi.routing.solve_dependencies

    async def counted(*a: Any, **kw: Any) -> Any:
        calls.append(1)
        return await real(*a, **kw)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return calls


def _hits(r: Any) -> list[tuple[str, float]]:
    assert r.status_code == 200, r.text
    return [(h["item"]["id"], h["score"]) for h in r.json()["hits"]]


def test_get_search_fast_and_slow_agree(home: Home, solved: list[int]) -> None:
    fast = home.client.get("/v1/memories/search?q=which%20tea&k=2", headers=home.h("alice"))
    assert not solved  # the front answered
    slow = home.client.get("/v1/memories/search?q=which%20tea&k=2&unknown=1", headers=home.h("alice"))
    assert solved  # FastAPI answered (it ignores the unknown parameter)
    assert _hits(fast) == _hits(slow) and len(_hits(fast)) == 2
    assert fast.json() == slow.json()
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert fast.headers["x-request-id"]


def test_post_search_and_add_fast_and_slow_agree(home: Home, solved: list[int]) -> None:
    body = json.dumps({"query": "where is the key", "k": 1}).encode()
    fast = home.client.post("/v1/memories/search", content=body, headers={**home.h("alice"), "Content-Type": "application/json"})
    assert not solved
    slow = home.client.post("/v1/memories/search", content=body,
                            headers={**home.h("alice"), "Content-Type": "application/json; charset=utf-8"})
    assert solved
    assert fast.json() == slow.json() and "fern" in fast.json()["hits"][0]["item"]["text"]
    added = home.client.post("/v1/memories", json={"text": "Bob's cat is Miso.", "tags": ["pets"]}, headers=home.h("bob"))
    assert added.status_code == 201, added.text
    assert len(solved) == 1  # the add went the fast way
    item = added.json()["items"][0]
    assert item["text"] == "Bob's cat is Miso." and item["tags"] == ["pets"] and item["user_id"] == "bob"
    got = home.client.get(f"/v1/memories/{item['id']}", headers=home.h("bob"))
    assert got.json() == item  # what the add answered is what a read answers


@pytest.mark.parametrize("query", ["q=tea&k=0", "q=tea&k=abc", "q=tea&k=-1", "q=&k=1", "k=3", "q=tea&q=coffee",
                                   "q=tea&cube_id=", "q=tea&k=1e3", f"q=tea&cube_id={'c' * 257}", "q=tea&k=%201"])
def test_get_search_unusual_queries_answer_as_fastapi(home: Home, query: str) -> None:
    """Whatever the front does not vouch for goes to FastAPI: its answer, with the parameter unknown to the front
    added or not, is the same."""
    assert _search_query(query.encode()) is None
    one = home.client.get(f"/v1/memories/search?{query}", headers=home.h("alice"))
    two = home.client.get(f"/v1/memories/search?{query}&zz=1", headers=home.h("alice"))
    assert one.status_code == two.status_code != 500
    if one.status_code != 200:
        assert one.json()["error"]["type"] == two.json()["error"]["type"]
        assert one.json()["error"]["message"] == two.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/memories/search?q=tea", "/v1/memories"])
def test_keys_refused_on_the_fast_path(home: Home, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer mk_nope_nope"}, home.h("revoked"), {"X-API-Key": "junk"}):
        if path.startswith("/v1/memories/search"):
            r = home.client.get(path, headers=headers)
        else:
            r = home.client.post(path, json={"text": "sneaky"}, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["type"] == "AuthenticationError"
    assert home.client.get("/v1/memories/search?q=sneaky", headers=home.h("alice")).json()["hits"][0]["item"]["text"] != "sneaky"


def test_other_users_cube_and_limits_on_the_fast_path(home: Home, solved: list[int]) -> None:
    r = home.client.get("/v1/memories/search?q=tea&cube_id=alice_default", headers=home.h("bob"))
    assert r.status_code == 404 and r.json()["error"]["type"] == "CubeNotFoundError"
    r2 = home.client.get("/v1/memories/search?q=tea&cube_id=no_such_cube", headers=home.h("bob"))
    assert r2.status_code == 404 and r2.json()["error"]["message"].replace("no_such_cube", "alice_default") == r.json()["error"]["message"]
    assert home.client.get("/v1/memories/search?q=tea&k=101", headers=home.h("alice")).status_code == 422  # over max_k
    assert home.client.get("/v1/memories/search?q=tea&user_id=bob", headers=home.h("alice")).status_code == 403
    r = home.client.post("/v1/memories", json={"text": "x", "cube_id": "alice_default"}, headers=home.h("bob"))
    assert r.status_code == 404
    assert not solved  # every one of these was refused by the route's own code, on the fast path


@pytest.mark.parametrize("body, status, kind", [
    (b'{"text": "a", "oops": 1}', 422, "InvalidTypeError"),        # unknown field: FastAPI names it
    (b'{"text": NaN}', 422, "InvalidInputError"),                   # not strict JSON
    (b'{"text": "a"', 422, "InvalidInputError"),                    # truncated
    (b'[1, 2]', 422, "InvalidTypeError"),                           # not an object
    (b'{"text": "a", "messages": [{"role": "user", "content": "b"}]}', 422, "InvalidTypeError"),  # both sources
    (b'\xff\xfe', 422, "InvalidInputError"),                        # not UTF-8
    (b'', 422, "InvalidTypeError"),                                 # no body
    (b'{"text": "' + b"x" * 5000 + b'"}', 413, "OversizedInputError"),  # over max_body_bytes
])
def test_bad_add_bodies_answer_as_fastapi(home: Home, body: bytes, status: int, kind: str) -> None:
    """The front reads the body, refuses to vouch, and hands it back to FastAPI, which answers as it always did."""
    before = home.client.get("/v1/memories?limit=500", headers=home.h("alice")).json()["items"]
    r = home.client.post("/v1/memories", content=body, headers={**home.h("alice"), "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == kind
    if kind == "InvalidTypeError" and b"oops" in body:
        assert "oops" in r.json()["error"]["message"]
    assert home.client.get("/v1/memories?limit=500", headers=home.h("alice")).json()["items"] == before  # nothing written


def test_search_query_parser() -> None:
    assert _search_query(b"q=tea%20time&k=7&session_id=s1&cube_id=c&user_id=u") == {
        "q": "tea time", "k": 7, "session_id": "s1", "cube_id": "c", "user_id": "u"}
    assert _search_query(b"q=a+b") == {"q": "a b"}
    assert _search_query(b"") is None and _search_query(b"q=a&k=010") is None and _search_query(b"q=a&agent_id=x") is None


def test_rate_limit_on_the_fast_path_takes_one_token_per_request(home: Home, solved: list[int]) -> None:
    """Rate limits on (the default): the fast front spends exactly the request's token, and an empty bucket is the
    usual 429 with Retry-After, for searches and adds alike."""
    client = TestClient(create_app(home.mos, keys=home.keys, limits=Limits(rate=0.01, burst=3), mcp=False))
    try:
        codes = [client.get("/v1/memories/search?q=tea", headers=home.h("alice")).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        refused = client.post("/v1/memories", json={"text": "one too many"}, headers=home.h("alice"))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "RateLimitedError"
        assert client.get("/v1/memories/search?q=tea", headers=home.h("bob")).status_code == 200  # per key
        assert not solved
    finally:
        client.close()
    assert "one too many" not in json.dumps(home.client.get("/v1/memories?limit=500", headers=home.h("alice")).json())


def test_without_the_fast_path_fastapi_answers_the_same(home: Home, solved: list[int]) -> None:
    client = TestClient(create_app(home.mos, keys=home.keys, limits=Limits(rate=0), mcp=False, fast_path=False))
    try:
        slow = client.get("/v1/memories/search?q=which%20tea&k=2", headers=home.h("alice"))
        assert solved
        assert slow.json() == home.client.get("/v1/memories/search?q=which%20tea&k=2", headers=home.h("alice")).json()
    finally:
        client.close()
