"""The memory service in process (FastAPI's TestClient): auth matrix, isolation, bad input, limits, routes.

Real MOS, real cubes, the real MiniLM embedder; the chat model is the deterministic stand-in (it quotes
the memory MOS recalled, so a test sees memory reach the answer). Live-server tests (uvicorn on loopback,
the openai SDK, concurrency, schemathesis) are in test_server_live.py.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from memos_integrations.langchain.standin import StandInChatModel  # noqa: E402
from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402


class World:
    """A MOS home with users alice, bob, root (admin) and an agent key for alice, plus dead keys."""

    def __init__(self, home: Path, embedder: Any, limits: Limits | None = None) -> None:
        self.mos = MOS(home, embedder=embedder, chat_model=StandInChatModel())
        self.mos.create_user("root", role="admin")
        for user in ("alice", "bob"):
            self.mos.create_user(user)
        self.keys = KeyStore.open(home / "mos.db")
        self.tokens = {u: self.keys.create(u)[0] for u in ("alice", "bob", "root")}
        self.tokens["alice-agent"] = self.keys.create("alice", agent_id="planner")[0]
        revoked, info = self.keys.create("alice")
        self.keys.revoke(info.key_id)
        expired, _ = self.keys.create("alice", expires_in=0.001)
        time.sleep(0.01)
        self.dead = {"revoked": revoked, "expired": expired}
        self.app = create_app(self.mos, keys=self.keys, limits=limits or Limits(rate=0), mcp=False)
        self.client = TestClient(self.app)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def close(self) -> None:
        self.client.close()
        self.keys.close()
        self.mos.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("server") / "home", embedder)
    c = w.client
    r = c.post("/v1/memories", json={"text": "Alice's favourite tea is genmaicha.", "tags": ["tea"]}, headers=w.h("alice"))
    assert r.status_code == 201, r.text
    w.alice_item = r.json()["items"][0]["id"]  # type: ignore[attr-defined]
    yield w
    w.close()


def _routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) under /v1 from the OpenAPI schema, path parameters filled with harmless ids."""
    out: list[tuple[str, str]] = []
    for path, ops in app.openapi()["paths"].items():
        if not path.startswith("/v1"):
            continue
        filled = path.replace("{item_id}", "X").replace("{cube_id}", "alice_default").replace("{user_id}", "bob")
        out.extend((m.upper(), filled) for m in ops)
    return out


BODIES = {"/v1/memories": {"text": "x"}, "/v1/memories/search": {"query": "x"}, "/v1/feedback": {"text": "x"},
          "/v1/cubes": {"cube_id": "c1"}, "/v1/export": {}, "/v1/import": {"rows": [{}]},
          "/v1/chat/completions": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}


def test_schema_lists_every_route_of_the_contract(world: World) -> None:
    routes = set(_routes(world.app))
    for route in [("POST", "/v1/memories"), ("POST", "/v1/memories/search"), ("GET", "/v1/memories/search"),
                  ("GET", "/v1/memories"), ("GET", "/v1/memories/X"), ("PATCH", "/v1/memories/X"),
                  ("DELETE", "/v1/memories/X"), ("GET", "/v1/memories/X/history"), ("POST", "/v1/feedback"),
                  ("GET", "/v1/cubes"), ("POST", "/v1/cubes"), ("POST", "/v1/cubes/alice_default/share"),
                  ("DELETE", "/v1/cubes/alice_default/share/bob"), ("GET", "/v1/users/me"), ("GET", "/v1/audit"),
                  ("GET", "/v1/stats"), ("POST", "/v1/export"), ("POST", "/v1/import"), ("POST", "/v1/chat/completions")]:
        assert route in routes
    schema = world.app.openapi()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])


@pytest.mark.parametrize("kind", ["none", "wrong", "malformed", "revoked", "expired", "basic", "empty-bearer"])
def test_every_route_refuses_a_bad_key_with_one_answer(world: World, kind: str) -> None:
    headers = {
        "none": {}, "wrong": {"Authorization": "Bearer mk_000000000000_" + "A" * 43},
        "malformed": {"Authorization": "Bearer hello"}, "revoked": {"Authorization": f"Bearer {world.dead['revoked']}"},
        "expired": {"X-API-Key": world.dead["expired"]}, "basic": {"Authorization": "Basic YWxpY2U6cHc="},
        "empty-bearer": {"Authorization": "Bearer "},
    }[kind]
    before = len(world.keys.audit_log(1000))
    messages = set()
    for method, path in _routes(world.app):
        r = world.client.request(method, path, json=BODIES.get(path), headers=headers)
        assert r.status_code == 401, (method, path, r.text)
        err = r.json()["error"]
        assert err["type"] == "AuthenticationError" and r.headers["x-request-id"] == err["request_id"]
        messages.add(err["message"])
    assert len(messages) == 1  # nothing about which key, user or cube exists
    assert "alice" not in messages.pop()
    world.app.state.authenticator.flush_suppressed(force=True)
    refused = [e for e in world.keys.audit_log(1000)[: len(world.keys.audit_log(1000)) - before] if not e["allowed"]]
    # every refusal audited: a row of its own, or counted in a later row (refusals are audited in
    # bounded rows, at most 5 a second per claimed key id)
    counted = sum((e["action"] == "authenticate") + sum(int(e["detail"].get(k, 0)) for k in (
        "suppressed_before", "suppressed_other_ids", "suppressed")) for e in refused)
    assert counted == len(_routes(world.app))


def test_another_users_key_finds_nothing_of_alices(world: World) -> None:
    c, item = world.client, world.alice_item  # type: ignore[attr-defined]
    bob = world.h("bob")
    c.post("/v1/memories", json={"text": "Bob keeps bees."}, headers=bob)  # bob has a cube of his own
    # an item id of alice's and an id that never existed: the same answer
    for iid in (item, "01NEVEREXISTED000000000000"):
        for method, path, body in (("GET", f"/v1/memories/{iid}", None), ("PATCH", f"/v1/memories/{iid}", {"text": "x"}),
                                   ("DELETE", f"/v1/memories/{iid}", None), ("GET", f"/v1/memories/{iid}/history", None)):
            r = c.request(method, path, json=body, headers=bob)
            assert r.status_code == 404 and r.json()["error"]["type"] == "ItemNotFoundError", (method, path, r.text)
    # alice's cube and a cube that does not exist: the same answer, word for word but the id
    answers = []
    for cube in ("alice_default", "nosuchcube"):
        calls: tuple[tuple[str, str, Any], ...] = (
            ("GET", f"/v1/memories?cube_id={cube}", None), ("GET", f"/v1/memories/search?q=tea&cube_id={cube}", None),
            ("POST", "/v1/memories/search", {"query": "tea", "cube_id": cube}),
            ("POST", "/v1/memories", {"text": "x", "cube_id": cube}), ("GET", f"/v1/memories/{item}?cube_id={cube}", None),
            ("GET", f"/v1/stats?cube_id={cube}", None), ("POST", "/v1/export", {"cube_id": cube}),
            ("POST", "/v1/import", {"rows": [{}], "cube_id": cube}), ("GET", f"/v1/audit?cube_id={cube}", None),
            ("POST", f"/v1/cubes/{cube}/share", {"user_id": "bob", "access": "write"}),
            ("DELETE", f"/v1/cubes/{cube}/share/bob", None),
        )
        for method, path, body in calls:
            r = c.request(method, path, json=body, headers=bob)
            assert r.status_code == 404, (method, path, r.text)
            answers.append((method, path.replace(cube, "C"), r.json()["error"]["type"],
                            r.json()["error"]["message"].replace(cube, "C")))
    half = len(answers) // 2
    assert answers[:half] == answers[half:]
    # and nothing of alice's leaked into bob's own searches or listings
    hits = c.get("/v1/memories/search?q=genmaicha tea", headers=bob).json()["hits"]
    assert all(h["item"]["user_id"] == "bob" for h in hits)
    assert all(i["user_id"] == "bob" for i in c.get("/v1/memories", headers=bob).json()["items"])


def test_acting_as_another_user_is_403_and_audited_unless_admin(world: World) -> None:
    c = world.client
    for method, path, body in (("GET", "/v1/memories?user_id=alice", None), ("POST", "/v1/memories", {"text": "x", "user_id": "alice"}),
                               ("POST", "/v1/memories/search", {"query": "tea", "user_id": "alice"}),
                               ("GET", "/v1/cubes?user_id=alice", None)):
        r = c.request(method, path, json=body, headers=world.h("bob"))
        assert r.status_code == 403 and r.json()["error"]["type"] == "AccessDeniedError", r.text
    assert any(e["action"] == "act_as" and not e["allowed"] and e["principal"] == "bob" for e in world.keys.audit_log(100))
    r = c.get("/v1/memories?user_id=ghost", headers=world.h("root"))
    assert r.status_code == 404 and r.json()["error"]["type"] == "UnknownUserError"
    r = c.get("/v1/memories/search?q=tea&user_id=alice", headers=world.h("root"))  # an admin may
    assert r.status_code == 200 and r.json()["hits"][0]["item"]["text"].startswith("Alice's favourite tea")


def test_agent_key_files_under_its_agent_and_no_other(world: World) -> None:
    c, h = world.client, world.h("alice-agent")
    r = c.post("/v1/memories", json={"text": "The planner prefers short plans."}, headers=h)
    assert r.status_code == 201
    item = r.json()["items"][0]
    assert item["agent_id"] == "planner" and item["created_by"] == "agent:planner" and item["user_id"] == "alice"
    r = c.post("/v1/memories", json={"text": "x", "agent_id": "other"}, headers=h)
    assert r.status_code == 403 and r.json()["error"]["type"] == "AccessDeniedError"
    me = c.get("/v1/users/me", headers=h).json()
    assert me["user_id"] == "alice" and me["agent_id"] == "planner"


def test_memory_lifecycle_through_the_routes(world: World) -> None:
    c, h = world.client, world.h("alice")
    r = c.post("/v1/memories", json={"text": "Alice moved to Lyon.", "metadata": {"topic": "home"}, "kind": "event",
                                     "session_id": "s1"}, headers=h)
    assert r.status_code == 201
    iid = r.json()["items"][0]["id"]
    got = c.get(f"/v1/memories/{iid}", headers=h).json()
    assert got["kind"] == "event" and got["session_id"] == "s1"
    # the caller's metadata as written, beside the session's working-memory partition the write path adds
    assert {k: v for k, v in got["metadata"].items() if not k.startswith("partition")} == {"topic": "home"}
    assert got["metadata"]["partition"] == "working"
    r = c.patch(f"/v1/memories/{iid}", json={"text": "Alice moved to Lyon in May.", "expected_version": 1}, headers=h)
    assert r.status_code == 200 and r.json()["version"] == 2
    r = c.patch(f"/v1/memories/{iid}", json={"text": "stale", "expected_version": 1}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["type"] == "ConflictError"
    r = c.patch(f"/v1/memories/{iid}", json={"tags": ["moves"], "metadata": {"topic": "home", "city": "Lyon"}}, headers=h)
    assert r.status_code == 200 and r.json()["tags"] == ["moves"] and r.json()["metadata"]["city"] == "Lyon"
    hits = c.post("/v1/memories/search", json={"query": "where does Alice live", "metadata": {"topic": "home"}}, headers=h).json()["hits"]
    assert [x["item"]["id"] for x in hits] == [iid]
    assert c.delete(f"/v1/memories/{iid}", headers=h).json() == {"deleted": 1}
    assert c.get(f"/v1/memories/{iid}", headers=h).status_code == 404
    assert c.delete(f"/v1/memories/{iid}", headers=h).status_code == 404
    versions = c.get(f"/v1/memories/{iid}/history", headers=h).json()["versions"]
    assert [v["state"] for v in versions][-1] == "deleted" and len(versions) == 4
    r = c.post("/v1/memories", json={"messages": [{"role": "user", "content": "I adopted a cat."},
                                                  {"role": "assistant", "content": "Congratulations!"}], "session_id": "s2"}, headers=h)
    assert r.status_code == 201 and [i["kind"] for i in r.json()["items"]] == ["message", "message"]


def test_pagination_walks_every_item_once(world: World) -> None:
    c, h = world.client, world.h("bob")
    c.post("/v1/cubes", json={"cube_id": "bob_pages"}, headers=h)
    for n in range(7):
        assert c.post("/v1/memories", json={"text": f"page note {n}", "cube_id": "bob_pages"}, headers=h).status_code == 201
    seen, cursor, pages = [], None, 0
    while True:
        url = "/v1/memories?cube_id=bob_pages&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = c.get(url, headers=h).json()
        seen += [i["text"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"page note {n}" for n in range(7)) and pages == 3
    r = c.get("/v1/memories?cursor=garbage!&cube_id=bob_pages", headers=h)
    assert r.status_code == 422 and "next_cursor" in r.json()["error"]["message"]


def test_sharing_reaches_and_revokes(world: World) -> None:
    c = world.client
    assert c.post("/v1/cubes", json={"cube_id": "alice_shared"}, headers=world.h("alice")).status_code == 201
    c.post("/v1/memories", json={"text": "The team offsite is in Porto.", "cube_id": "alice_shared"}, headers=world.h("alice"))
    assert c.get("/v1/memories?cube_id=alice_shared", headers=world.h("bob")).status_code == 404
    r = c.post("/v1/cubes/alice_shared/share", json={"user_id": "bob", "access": "read"}, headers=world.h("alice"))
    assert r.status_code == 200
    hits = c.get("/v1/memories/search?q=offsite&cube_id=alice_shared", headers=world.h("bob")).json()["hits"]
    assert hits and "Porto" in hits[0]["item"]["text"]
    r = c.post("/v1/memories", json={"text": "x", "cube_id": "alice_shared"}, headers=world.h("bob"))
    assert r.status_code == 403 and r.json()["error"]["type"] == "AccessDeniedError"  # bob sees it, may not write
    r = c.post("/v1/cubes/alice_shared/share", json={"user_id": "root", "access": "write"}, headers=world.h("bob"))
    assert r.status_code == 403  # only the owner shares
    assert {"cube_id": "alice_shared", "access": "read"} in c.get("/v1/cubes", headers=world.h("bob")).json()["cubes"]
    assert c.delete("/v1/cubes/alice_shared/share/bob", headers=world.h("alice")).status_code == 200
    assert c.get("/v1/memories?cube_id=alice_shared", headers=world.h("bob")).status_code == 404
    denied = [e for e in c.get("/v1/audit?cube_id=alice_shared", headers=world.h("alice")).json()["entries"] if not e["allowed"]]
    assert {e["principal"] for e in denied} == {"bob"}  # MOS audited bob's refusals in the cube's log
    # an id someone else took: 409, no more
    r = c.post("/v1/cubes", json={"cube_id": "alice_shared"}, headers=world.h("bob"))
    assert r.status_code == 409 and r.json()["error"]["message"] == "the cube id 'alice_shared' is taken; choose another"


@pytest.mark.parametrize("case", [
    ("POST", "/v1/memories", b"{not json", "InvalidInputError"),
    ("POST", "/v1/memories", b"[]", "InvalidTypeError"),
    ("POST", "/v1/memories", b'{"text": 42}', "InvalidTypeError"),
    ("POST", "/v1/memories", b'{"text": "x", "messages": [{"role": "user", "content": "y"}]}', "InvalidTypeError"),
    ("POST", "/v1/memories", b'{}', "InvalidTypeError"),
    ("POST", "/v1/memories", b'{"text": "   "}', "EmptyTextError"),
    ("POST", "/v1/memories", b'{"text": "x", "tags": "work"}', "InvalidTypeError"),
    ("POST", "/v1/memories", b'{"text": "x", "colour": "red"}', "InvalidTypeError"),
    ("POST", "/v1/memories", b'{"text": "x", "kind": "poem"}', "InvalidTypeError"),
    ("POST", "/v1/memories", b'{"text": "x", "timestamp": "the day after never"}', "InvalidInputError"),
    # fine mode needs an LLM reader, which this cube does not have
    ("POST", "/v1/memories", b'{"messages": [{"role": "user", "content": "x"}], "mode": "fine"}', "InvalidInputError"),
    ("POST", "/v1/memories", b'{"text": "x", "cube_id": "../etc"}', "CubeNotFoundError"),
    ("POST", "/v1/memories/search", b'{"query": ""}', "InvalidTypeError"),
    ("POST", "/v1/memories/search", b'{"query": "x", "k": 100000}', "InvalidInputError"),
    ("POST", "/v1/memories/search", b'{"query": "x", "k": "ten"}', "InvalidTypeError"),
    ("POST", "/v1/memories/search", b'{"query": "x", "metadata": {"a": {"$regex": "."}}}', "InvalidFilterError"),
    ("POST", "/v1/memories/search", b'{"query": "x", "as_of": "yesterday-ish"}', "InvalidTypeError"),
    ("GET", "/v1/memories?limit=-1", b"", "InvalidTypeError"),
    ("GET", "/v1/memories?limit=100000", b"", "InvalidInputError"),
    ("PATCH", "/v1/memories/X", b"{}", "InvalidTypeError"),
    ("POST", "/v1/import", b'{"rows": [{"type": "nonsense"}]}', "InvalidInputError"),
    ("POST", "/v1/cubes", b'{"cube_id": "a/b"}', "InvalidInputError"),
    ("POST", "/v1/feedback", b'{"text": "I moved"}', "InvalidInputError"),
    ("GET", "/v1/nowhere", b"", "RouteNotFoundError"),
    ("PUT", "/v1/memories", b"{}", "MethodNotAllowedError"),
    ("POST", "/v1/chat/completions", b'{"model": "m", "messages": [{"role": "system", "content": "x"}]}', "InvalidInputError"),
])
def test_bad_input_is_a_structured_4xx(world: World, case: tuple[str, str, bytes, str]) -> None:
    method, path, body, kind = case
    r = world.client.request(method, path, content=body, headers={**world.h("alice"), "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500 or r.status_code == 501, r.text
    err = r.json()["error"]
    assert err["type"] == kind, err
    assert err["message"] and err["request_id"] == r.headers["x-request-id"]


def test_a_rejected_import_writes_nothing(world: World) -> None:
    c, h = world.client, world.h("bob")
    c.post("/v1/cubes", json={"cube_id": "bob_import"}, headers=h)
    c.post("/v1/memories", json={"text": "Bob's import source.", "cube_id": "bob_import"}, headers=h)
    rows = c.post("/v1/export", json={"cube_id": "bob_import"}, headers=h).json()["rows"]
    assert rows
    c.post("/v1/cubes", json={"cube_id": "bob_import2"}, headers=h)
    bad = [*rows, {"type": "nonsense"}]
    assert c.post("/v1/import", json={"rows": bad, "cube_id": "bob_import2"}, headers=h).status_code == 422
    assert c.get("/v1/memories?cube_id=bob_import2", headers=h).json()["items"] == []
    r = c.post("/v1/import", json={"rows": rows, "cube_id": "bob_import2"}, headers=h)
    assert r.status_code == 200 and r.json()["imported"] >= 1
    assert [i["text"] for i in c.get("/v1/memories?cube_id=bob_import2", headers=h).json()["items"]] == ["Bob's import source."]


def test_huge_bodies_are_413_by_length_and_while_streaming(tmp_path: Path, embedder: Any) -> None:
    w = World(tmp_path / "home", embedder, Limits(rate=0, max_body_bytes=10_000))
    try:
        big = json.dumps({"text": "x" * 20_000}).encode()
        r = w.client.post("/v1/memories", content=big, headers={**w.h("alice"), "Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["type"] == "OversizedInputError"

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer, cut off while it streams
            for start in range(0, len(big), 1000):
                yield big[start:start + 1000]

        r = w.client.post("/v1/memories", content=chunks(), headers={**w.h("alice"), "Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["type"] == "OversizedInputError"
        assert w.client.get("/v1/memories", headers=w.h("alice")).json()["items"] == []  # nothing half-written
        assert w.client.post("/v1/memories", json={"text": "small"}, headers=w.h("alice")).status_code == 201
    finally:
        w.close()


def test_rate_limit_is_per_key_with_retry_after(tmp_path: Path, embedder: Any) -> None:
    w = World(tmp_path / "home", embedder, Limits(rate=0.5, burst=3))
    try:
        codes = [w.client.get("/v1/cubes", headers=w.h("alice")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = w.client.get("/v1/cubes", headers=w.h("alice"))
        assert r.status_code == 429 and r.json()["error"]["type"] == "RateLimitedError" and int(r.headers["Retry-After"]) >= 1
        assert w.client.get("/v1/cubes", headers=w.h("bob")).status_code == 200  # another key has its own bucket
    finally:
        w.close()


def test_cors_is_off_by_default_and_on_when_configured(world: World, tmp_path: Path, embedder: Any) -> None:
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    r = world.client.options("/v1/memories", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    r = world.client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    w = World(tmp_path / "home", embedder, Limits(rate=0, cors_origins=("https://app.example",)))
    try:
        r = w.client.options("/v1/memories", headers={**pre, "Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
    finally:
        w.close()


def test_request_ids_health_and_readiness(world: World) -> None:
    r = world.client.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert r.json() == {"status": "ok"} and r.headers["x-request-id"] == "trace-42"
    r = world.client.get("/readyz", headers={"X-Request-ID": "bad id with spaces\x01"})
    assert r.json() == {"status": "ready"} and len(r.headers["x-request-id"]) == 32


def test_chat_completions_answers_with_memory_and_remembers(world: World) -> None:
    c, h = world.client, world.h("alice")
    body = {"model": "memcube", "messages": [{"role": "user", "content": "Which tea do I like?"}]}
    r = c.post("/v1/chat/completions", json=body, headers=h)
    assert r.status_code == 200, r.text
    answer = r.json()["choices"][0]["message"]["content"]
    assert "genmaicha" in answer
    stored = c.get("/v1/memories?limit=500", headers=h).json()["items"]
    assert any(i["text"] == "Which tea do I like?" and i["kind"] == "message" for i in stored)
    before = len(c.get("/v1/memories?limit=500", headers=h).json()["items"])
    r = c.post("/v1/chat/completions", json={**body, "store": False}, headers=h)
    assert r.status_code == 200 and len(c.get("/v1/memories?limit=500", headers=h).json()["items"]) == before


def test_keys_are_hashed_at_rest_and_managed_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from memos_integrations.cli import main

    home = tmp_path / "home"
    assert main(["keys", "create", "--home", str(home), "--user", "dora", "--agent", "bot", "--expires-days", "2"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("mk_") and len(token) > 40
    raw = b"".join(p.read_bytes() for p in home.glob("mos.db*"))
    assert token.encode() not in raw and token.split("_", 2)[2].encode() not in raw
    with sqlite3.connect(home / "mos.db") as db:
        (stored,) = db.execute("SELECT digest FROM api_keys").fetchone()
    assert len(stored) == 64 and stored != token
    keys = KeyStore.open(home / "mos.db")
    try:
        info = keys.verify(token)
        assert info is not None and (info.user_id, info.agent_id) == ("dora", "bot") and info.expires_at
        assert main(["keys", "list", "--home", str(home)]) == 0
        assert f"{info.key_id}  active" in capsys.readouterr().out
        assert main(["keys", "revoke", "--home", str(home), info.key_id]) == 0
        assert keys.verify(token) is None
        assert main(["keys", "revoke", "--home", str(home), info.key_id]) == 2  # already revoked: says so
    finally:
        keys.close()


def test_item_json_is_exactly_to_dict(world: World) -> None:
    from memos_integrations.server.service import item_json

    item = world.mos.get("alice_default", world.alice_item, user_id="alice")  # type: ignore[attr-defined]
    assert item_json(item) == item.to_dict()
    assert json.loads(world.client.get(f"/v1/memories/{item.id}", headers=world.h("alice")).text) == item.to_dict()


def test_search_as_of_reads_what_was_true_then(tmp_path: Path, embedder: Any) -> None:
    """REST ``as_of`` is ``MemCube.search(as_of=)``: a superseded memory is hidden from the current truth
    and found for a time when it was true."""
    from datetime import datetime, timezone

    from memos_integrations.items import MemoryItem

    w = World(tmp_path / "home", embedder)
    try:
        r = w.client.post("/v1/memories", json={"text": "Alice lives in Porto."}, headers=w.h("alice"))
        assert r.status_code == 201, r.text
        cube = w.mos._cube("alice_default")
        old = MemoryItem(text="Alice lives in Lisbon.", user_id="alice",
                         valid_from=datetime(2020, 1, 1, tzinfo=timezone.utc),
                         valid_to=datetime(2024, 5, 1, tzinfo=timezone.utc))
        cube.text_mem.add_items([old])
        now = w.client.post("/v1/memories/search", json={"query": "where does Alice live?"}, headers=w.h("alice"))
        then = w.client.post("/v1/memories/search", json={"query": "where does Alice live?", "as_of": "2023-06-01T00:00:00Z"},
                             headers=w.h("alice"))
        assert now.status_code == then.status_code == 200, (now.text, then.text)
        assert "Alice lives in Lisbon." not in [h["item"]["text"] for h in now.json()["hits"]]
        assert "Alice lives in Lisbon." in [h["item"]["text"] for h in then.json()["hits"]]
    finally:
        w.close()
