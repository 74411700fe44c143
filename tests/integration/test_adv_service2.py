"""Hostile clients against the face routes (/v1/faces, /v1/vector-stores) and the key cache: each test is
an attack that once succeeded (a 500, a poisoned row, a leak), kept so it cannot come back.

The app runs in-process (Starlette's TestClient) over a MOS home with a 6-dimension fake embedder, so the
module costs about a second; alice and bob each own a cube, and alice shares ``shared`` with bob for writing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("llama_index.core")

from fastapi.testclient import TestClient  # noqa: E402
from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402

from memos_integrations import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402


class Client:
    def __init__(self, home: Path) -> None:
        self.mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))
        self.keys = KeyStore.open(home / "mos.db")
        for user in ("alice", "bob"):
            self.mos.create_user(user)
            self.mos.create_cube_for_user(f"{user}_cube", owner_id=user)
        self.mos.create_cube_for_user("shared", owner_id="alice")
        self.mos.share_cube_with_user("shared", "bob", "write", user_id="alice")
        self.key = {u: self.keys.create(u)[0] for u in ("alice", "bob")}
        app = create_app(self.mos, keys=self.keys, limits=Limits(rate=0, max_body_bytes=64_000), mcp=False)
        self.http = TestClient(app, raise_server_exceptions=False)

    def post(self, who: str, path: str, body: Any = None, *, raw: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.key[who]}", "Content-Type": "application/json"}
        if raw is not None:
            return self.http.post(path, content=raw.encode(), headers=headers)
        return self.http.post(path, json=body, headers=headers)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    client = Client(tmp_path_factory.mktemp("adv2"))
    yield client
    client.http.close()
    client.mos.close()


def _error(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["error"]["type"])


# -- finding: NaN / Infinity / 1e400 in a JSON body were stored, and every later read was a 500 ----------
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_in_a_body_are_a_422_and_store_nothing(svc: Client, number: str) -> None:
    collection = f"nan{abs(hash(number))}"
    put = svc.post("alice", "/v1/faces/llama-kv", raw='{"cube_id": "alice_cube", "op": "put_all", "collection": "COLL",'
                   ' "pairs": [["ok", {"x": 1}], ["bad", {"x": NUM}]]}'.replace("COLL", collection).replace("NUM", number))
    assert _error(put, 422) == "InvalidInputError"
    assert "NaN" in put.json()["error"]["message"] or "finite" in put.json()["error"]["message"]
    got = svc.post("alice", "/v1/faces/llama-kv", {"cube_id": "alice_cube", "op": "get_all", "collection": collection})
    assert got.status_code == 200 and got.json()["values"] == {}  # nothing half-written, nothing poisoned
    chat = svc.post("alice", "/v1/faces/llama-chat", raw='{"cube_id": "alice_cube", "op": "add", "key": "kCOLL", "messages":'
                    ' [{"role": "user", "content": "x", "additional_kwargs": {"y": NUM}}]}'.replace("COLL", collection)
                    .replace("NUM", number))
    assert _error(chat, 422) == "InvalidInputError"


# -- finding: integers beyond SQLite's range (a chat page's offset, LlamaIndex's sparse/hybrid top k) were a 500
@pytest.mark.parametrize(("path", "body"), [
    ("/v1/faces/llama-chat", {"cube_id": "alice_cube", "op": "rows", "key": "k", "offset": 10**23}),
    ("/v1/faces/llama-chat", {"cube_id": "alice_cube", "op": "rows", "key": "k", "offset": 2**63}),
    ("/v1/vector-stores/llama-index/query", {"cube_id": "alice_cube", "query": {
        "query_embedding": [0.1] * 6, "query_str": "hello", "mode": "hybrid", "similarity_top_k": 2, "sparse_top_k": 10**30}}),
    ("/v1/vector-stores/llama-index/query", {"cube_id": "alice_cube", "query": {
        "query_embedding": [0.1] * 6, "query_str": "hello", "mode": "hybrid", "similarity_top_k": 2, "hybrid_top_k": 10**30}}),
    ("/v1/vector-stores/llama-index/query", {"cube_id": "alice_cube", "query": {
        "query_embedding": [0.1] * 6, "query_str": "hello", "mode": "hybrid", "similarity_top_k": 2, "hybrid_top_k": -3}}),
])
def test_out_of_range_integers_are_a_422(svc: Client, path: str, body: dict[str, Any]) -> None:
    svc.post("alice", "/v1/faces/llama-chat", {"cube_id": "alice_cube", "op": "add", "key": "k",
                                               "messages": [{"role": "user", "content": "hello"}]})
    assert _error(svc.post("alice", path, body), 422) in {"InvalidInputError", "InvalidTypeError"}


# -- finding: a fresh process's first requests to several face routes at once were 500s and 501s (their lazy
# imports raced in the worker threads: "partially initialized module"; with more threads, requests hung)
_COLD = r'''
"""Cold process: first requests to every face route arrive at once (no face module imported yet)."""
import sys, threading, tempfile
from pathlib import Path
import numpy as np
from memos_integrations import MOS
from memos_integrations.server import KeyStore, Limits, create_app
from fastapi.testclient import TestClient

class Tiny:
    name, dimension, fingerprint = "tiny", 4, "tiny-4"
    def embed_documents(self, texts): return np.ones((len(texts), 4), dtype=np.float32)
    def embed_query(self, text): return np.ones(4, dtype=np.float32)

home = Path(tempfile.mkdtemp())
mos = MOS(home, embedder=Tiny())
keys = KeyStore.open(home / "mos.db")
mos.create_user("alice"); mos.create_cube_for_user("alice_cube", owner_id="alice")
key = keys.create("alice")[0]
client = TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False), raise_server_exceptions=False)
bodies = [
    ("/v1/faces/store/batch", {"cube_id": "alice_cube", "ops": [{"op": "put", "namespace": ["n"], "key": "k", "value": {"a": 1}}]}),
    ("/v1/faces/store/batch", {"cube_id": "alice_cube", "ops": [{"op": "get", "namespace": ["n"], "key": "k"}]}),
    ("/v1/faces/chat-history", {"cube_id": "alice_cube", "op": "add", "session_id": "s", "messages": [{"type": "human", "data": {"content": "hi"}}]}),
    ("/v1/faces/llama-chat", {"cube_id": "alice_cube", "op": "add", "key": "c", "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/faces/llama-kv", {"cube_id": "alice_cube", "op": "put_all", "pairs": [["k", {"a": 1}]]}),
    ("/v1/vector-stores/langchain/add", {"cube_id": "alice_cube", "texts": ["hi"]}),
    ("/v1/vector-stores/llama-index/get-nodes", {"cube_id": "alice_cube", "node_ids": ["x"]}),
    ("/v1/vector-stores/llama-index/query", {"cube_id": "alice_cube", "query": {"query_embedding": [1, 1, 1, 1]}}),
]
status = {}
gate = threading.Barrier(len(bodies))
def call(i, path, body):
    gate.wait()
    r = client.post(path, json=body, headers={"Authorization": f"Bearer {key}"}); status[i] = r.status_code
    if r.status_code >= 500:
        print(path, r.text[:300], flush=True)
threads = [threading.Thread(target=call, args=(i, p, b), daemon=True) for i, (p, b) in enumerate(bodies)]
for t in threads: t.start()
for t in threads: t.join(timeout=float(sys.argv[1]) if len(sys.argv) > 1 else 60)
print(sorted(status.items()), "answered", len(status), "of", len(bodies), flush=True)
import os; os._exit(0 if len(status) == len(bodies) and all(s < 500 for s in status.values()) else 1)
'''


def test_first_requests_to_every_face_at_once_in_a_fresh_process(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = tmp_path / "cold.py"
    script.write_text(_COLD, encoding="utf-8")
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), "30"], capture_output=True, text=True, timeout=90, env=env, cwd=root)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


# -- finding: /mcp checked its key on the event loop; the key store's writes (the refusal's audit row, the
# rate bucket) wait for mos.db's write lock, so while another process held that lock every request of
# every user (even /healthz) waited with it
def test_an_mcp_key_check_waiting_for_the_database_does_not_stall_other_requests(tmp_path: Path) -> None:
    import sqlite3
    import threading
    import time

    import httpx

    pytest.importorskip("mcp")
    pytest.importorskip("uvicorn")
    from tests.integration.test_remote_cube import serve

    home = tmp_path / "home"
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))
    keys = KeyStore.open(home / "mos.db")
    url, stop = serve(create_app(mos, keys=keys, limits=Limits(rate=0)))  # type: ignore[misc]
    lock = sqlite3.connect(home / "mos.db", timeout=5, isolation_level=None, check_same_thread=False)
    try:
        with httpx.Client(timeout=30) as http:
            assert http.get(url + "/healthz").status_code == 200
            lock.execute("BEGIN IMMEDIATE")  # another process writing mos.db, for 1.5 s
            release = threading.Timer(1.5, lambda: lock.execute("COMMIT"))
            release.start()
            refused: list[int] = []
            mcp = threading.Thread(target=lambda: refused.append(httpx.post(
                url + "/mcp/", json={}, timeout=30, headers={"Authorization": "Bearer mk_nope_nope"}).status_code))
            mcp.start()
            time.sleep(0.3)  # the MCP request is waiting for the lock now
            started = time.monotonic()
            try:
                healthy = http.get(url + "/healthz", timeout=5).status_code == 200
            except httpx.TimeoutException:
                healthy = False
            waited = time.monotonic() - started
            release.join()
            mcp.join(timeout=30)
        assert healthy and waited < 0.8, f"/healthz waited {waited:.2f} s for another request's database lock"
        assert refused == [401]
    finally:
        lock.close()
        stop()
        mos.close()


# -- finding: an MCP tool call over HTTP took two tokens from the key's rate bucket (the endpoint's key check,
# then the tool's own), so an MCP client got half the documented rate
async def test_an_mcp_request_takes_one_rate_token(tmp_path: Path) -> None:
    import sqlite3

    pytest.importorskip("mcp")
    pytest.importorskip("uvicorn")
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from tests.integration.test_remote_cube import serve

    home = tmp_path / "home"
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))
    mos.create_user("alice")
    keys = KeyStore.open(home / "mos.db")
    key, info = keys.create("alice")
    burst = 1000  # refilled at 1e-6 tokens/s: what the requests took is what is missing
    url, stop = serve(create_app(mos, keys=keys, limits=Limits(rate=1e-6, burst=burst, rate_lease=1)))  # type: ignore[misc]  # lease 1: the bucket counts each token
    sent: list[str] = []

    async def count(request: Any) -> None:
        sent.append(f"{request.method} {request.url.path}")

    try:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60,
                                  event_hooks={"request": [count]})
        async with Client(streamable_http_client(url + "/mcp/", http_client=http)) as client:
            for _ in range(3):
                await client.call_tool("search_memory", {"query": "tea"})
        await http.aclose()
        with sqlite3.connect(home / "mos.db") as db:
            (tokens,) = db.execute("SELECT tokens FROM rate_buckets WHERE key_id = ?", (info.key_id,)).fetchone()
        assert round(burst - tokens) == len(sent), sent
    finally:
        stop()
        mos.close()


def test_a_body_that_is_not_utf8_is_a_422_that_does_not_blame_nan(svc: Client) -> None:
    headers = {"Authorization": f"Bearer {svc.key['alice']}", "Content-Type": "application/json"}
    r = svc.http.post("/v1/faces/llama-kv", content=b'{"op": "get_all", "collection": "\xff\xfe"}', headers=headers)
    assert _error(r, 422) == "InvalidInputError" and "NaN" not in r.json()["error"]["message"]


# -- finding: one store batch of many searches cost one rate token (each search embeds a query) ----------
def test_a_store_batch_pays_a_rate_token_per_search(tmp_path: Path) -> None:
    mos = MOS(tmp_path / "home", embedder=DeterministicFakeEmbedding(size=6))
    keys = KeyStore.open(tmp_path / "home" / "mos.db")
    mos.create_user("alice")
    mos.create_cube_for_user("alice_cube", owner_id="alice")
    key = keys.create("alice")[0]
    app = create_app(mos, keys=keys, limits=Limits(rate=0.01, burst=5), mcp=False)
    headers = {"Authorization": f"Bearer {key}"}

    def batch(n: int) -> Any:
        ops = [{"op": "search", "namespace_prefix": ["notes"], "query": f"q{i}"} for i in range(n)]
        return http.post("/v1/faces/store/batch", json={"cube_id": "alice_cube", "ops": ops}, headers=headers)

    with TestClient(app, raise_server_exceptions=False) as http:
        assert batch(3).status_code == 200  # 3 of the 5 tokens
        refused = batch(3)  # 3 more: only 2 left
        assert refused.status_code == 429 and refused.headers.get("retry-after"), refused.text
        assert batch(1).status_code == 200  # the refusal spent nothing but its own request's token
    mos.close()


# -- finding: refused keys wrote one audit row each, unthrottled: a keyless flood grew mos.db without bound
def test_a_flood_of_bad_keys_is_refused_every_time_but_audited_in_bounded_rows(svc: Client) -> None:
    before = len([e for e in svc.keys.audit_log(100_000) if e["action"] == "authenticate"])
    started = time.monotonic()
    for _ in range(60):
        r = svc.http.get("/v1/users/me", headers={"Authorization": "Bearer mk_nosuchkey_xxxxxxxx"})
        assert r.status_code == 401
    seconds = int(time.monotonic() - started) + 1
    rows = [e for e in svc.keys.audit_log(100_000) if e["action"] == "authenticate"][: 100_000]
    written = len(rows) - before
    assert 1 <= written <= 5 * (seconds + 1), written  # a few per second, not one per request


def test_refusals_counted_but_not_written_reach_the_log_when_the_app_stops(tmp_path: Path) -> None:
    mos = MOS(tmp_path / "home", embedder=DeterministicFakeEmbedding(size=6))
    keys = KeyStore.open(tmp_path / "home" / "mos.db")
    app = create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False)
    with TestClient(app, raise_server_exceptions=False) as http:  # the context runs the app's lifespan
        for _ in range(30):
            assert http.get("/v1/users/me", headers={"Authorization": "Bearer mk_victimid0000_x"}).status_code == 401
    rows = [e for e in keys.audit_log(1000) if e["action"].startswith("authenticate")]
    counted = sum((e["action"] == "authenticate") + sum(int(e["detail"].get(k, 0)) for k in (
        "suppressed_before", "suppressed_other_ids", "suppressed")) for e in rows)
    assert counted == 30 and len(rows) < 30
    mos.close()
