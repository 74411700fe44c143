"""The service with batched query embeddings, on a real uvicorn server on loopback: concurrent users each get
their own hits, a client that vanishes while its search is queued does not hold anyone up, and
``memcube serve`` batches only homes whose cubes were all built with MiniLM.

A gate holds the batcher's first embedding call, so the requests that follow queue up behind it and are
embedded together (what a loaded service does).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

import httpx  # noqa: E402

from memos_integrations import MemCube  # noqa: E402
from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.server.service import serving_embedder  # noqa: E402
from memos_integrations.textual.batching import BatchedEmbedder  # noqa: E402
from tests.integration.conftest import free_port  # noqa: E402

FACTS = {"alice": ["Alice drinks genmaicha every morning", "Alice's tea pot is cast iron"],
         "bob": ["Bob restores a 1967 Mustang", "Bob's car needs new brakes"]}
QUERIES = {"alice": ["what tea does she drink", "what is the pot made of"],
           "bob": ["which car is restored", "what does the car need"]}


class Gate:
    """An ``embed_many`` whose first call after :meth:`hold` waits until :meth:`release`."""

    def __init__(self, embed_many: Any) -> None:
        self.embed_many, self.opened, self.entered = embed_many, threading.Event(), threading.Event()
        self.batches: list[list[str]] = []
        self.opened.set()

    def hold(self) -> None:
        self.opened.clear()
        self.entered.clear()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.entered.set()
        assert self.opened.wait(20), "the test never released the gate"
        return self.embed_many(texts)  # type: ignore[no-any-return]


@pytest.fixture
def live(tmp_path: Path, embedder: Any) -> Any:
    gate = Gate(embedder.embed_documents)
    shared = BatchedEmbedder(embedder, gate)
    mos = MOS(tmp_path / "home", embedder=shared)
    keys = KeyStore.open(tmp_path / "home" / "mos.db")
    tokens = {}
    for user, texts in FACTS.items():
        mos.create_user(user)
        tokens[user] = keys.create(user)[0]
        cube = mos.create_cube_for_user(f"{user}_default", owner_id=user, user_id=user)
        for text in texts:
            mos.cube(cube, user_id=user, access="write").add(memory=text, kind="fact")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False),
                                           host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield {"base": f"http://127.0.0.1:{port}", "port": port, "tokens": tokens, "gate": gate, "shared": shared}
    gate.opened.set()
    server.should_exit = True
    thread.join(timeout=20)
    keys.close()
    mos.close()
    shared.close()


def _queued(shared: BatchedEmbedder, n: int) -> None:
    deadline = time.monotonic() + 20
    while len(shared.batcher._queue) < n:
        assert time.monotonic() < deadline, f"only {len(shared.batcher._queue)} of {n} searches were queued"
        time.sleep(0.005)


def _search(live: Any, user: str, q: str) -> list[str]:
    r = httpx.get(f"{live['base']}/v1/memories/search", params={"q": q, "k": 2},
                  headers={"Authorization": f"Bearer {live['tokens'][user]}"}, timeout=30)
    assert r.status_code == 200, r.text
    return [h["item"]["text"] for h in r.json()["hits"]]


def test_concurrent_users_over_http_each_get_their_own_hits_from_shared_batches(live: Any) -> None:
    gate, shared = live["gate"], live["shared"]
    gate.hold()
    threading.Thread(target=shared.embed_query, args=("hold the worker",), daemon=True).start()
    assert gate.entered.wait(20)
    jobs = [(u, q) for u, qs in QUERIES.items() for q in qs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(_search, live, u, q) for u, q in jobs]
        _queued(shared, len(jobs))
        gate.opened.set()
        got = [f.result(timeout=30) for f in futures]
    assert any(set(jobs_q for _, jobs_q in jobs) <= set(b) for b in gate.batches[1:]), "all four were embedded in one call"
    for (user, _), texts in zip(jobs, got, strict=True):
        assert texts and set(texts) <= set(FACTS[user])


def test_a_client_that_disconnects_while_its_search_is_queued_holds_no_one_up(live: Any) -> None:
    gate, shared = live["gate"], live["shared"]
    gate.hold()
    threading.Thread(target=shared.embed_query, args=("hold the worker again",), daemon=True).start()
    assert gate.entered.wait(20)
    gone = socket.create_connection(("127.0.0.1", live["port"]), timeout=10)
    gone.sendall(f"GET /v1/memories/search?q=tea+for+the+road&k=2 HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {live['tokens']['alice']}\r\n\r\n".encode())
    _queued(shared, 1)
    gone.close()  # the client walks away while its query waits for the batcher
    with ThreadPoolExecutor(1) as pool:
        bob = pool.submit(_search, live, "bob", "which car is restored")
        _queued(shared, 2)
        gate.opened.set()
        assert set(bob.result(timeout=30)) <= set(FACTS["bob"])
    assert set(_search(live, "alice", "what tea does she drink")) <= set(FACTS["alice"])


class _Renamed:
    """MiniLM under another name: a cube built with it is not a MiniLM cube to the service."""

    def __init__(self, real: Any) -> None:
        self.real, self.name, self.dimension = real, "renamed-minilm", real.dimension

    @property
    def fingerprint(self) -> str:
        return "renamed"

    def embed_documents(self, texts: Any) -> np.ndarray:
        return self.real.embed_documents(texts)  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> np.ndarray:
        return self.real.embed_query(text)  # type: ignore[no-any-return]


def test_memcube_serve_batches_a_minilm_home_and_leaves_any_other_home_as_it_was(tmp_path: Path, embedder: Any) -> None:
    empty = serving_embedder(tmp_path / "new_home")  # a new home's cubes are MiniLM cubes
    assert isinstance(empty, BatchedEmbedder)
    empty.close()
    mos = MOS(tmp_path / "home", embedder=embedder)
    mos.create_user("alice")
    mos.create_cube_for_user("alice_default", owner_id="alice", user_id="alice")
    mos.close()
    minilm = serving_embedder(tmp_path / "home")
    assert isinstance(minilm, BatchedEmbedder) and minilm.fingerprint == embedder.fingerprint
    # the service's default: int8 where it is cheaper on this CPU (half a query's CPU with VNNI), else fp32
    assert minilm.inner.query_precision == "auto"
    assert minilm.inner.query_precision_in_use == ("int8" if minilm.inner._model.int8_pays() else "fp32")
    assert minilm.doc_batcher is not None  # concurrent fast adds share a forward pass too
    minilm.close()
    fp32 = serving_embedder(tmp_path / "home", "fp32")  # memcube serve --query-precision fp32
    assert fp32.inner.query_precision == "fp32" and fp32.fingerprint == embedder.fingerprint
    fp32.close()
    mos = MOS(tmp_path / "home", embedder=embedder)
    other = MemCube.init_from_dir(tmp_path / "other_cube", embedder=_Renamed(embedder))
    mos.register_mem_cube(other, user_id="alice", mem_cube_id="other")
    mos.close()
    assert serving_embedder(tmp_path / "home") is None  # each cube opens its own embedder, unbatched


def test_the_embed_route_gives_queries_in_the_service_query_precision(tmp_path: Path, embedder: Any) -> None:
    """``POST /v1/vector-stores/embed`` with ``query: true`` embeds every text as a query (in the precision
    ``memcube serve`` chose: int8 where it is cheaper on this CPU, else fp32), one text or many; documents stay fp32."""
    from fastapi.testclient import TestClient

    from memos_integrations.textual.embed import MiniLMEmbedder

    served = serving_embedder(tmp_path / "home")
    mos = MOS(tmp_path / "home", embedder=served)
    keys = KeyStore.open(tmp_path / "home" / "mos.db")
    mos.create_user("alice")
    key = keys.create("alice")[0]
    int8 = MiniLMEmbedder(query_precision=served.inner.query_precision_in_use)  # what auto chose
    texts = ["what does alice drink?", "tea at breakfast"]
    try:
        with TestClient(create_app(mos, keys=keys, limits=Limits(rate=0))) as http:
            def embed(body: dict[str, Any]) -> np.ndarray:
                got = http.post("/v1/vector-stores/embed", json=body, headers={"Authorization": f"Bearer {key}"})
                assert got.status_code == 200, got.text
                return np.array(got.json()["vectors"], dtype=np.float32)

            np.testing.assert_allclose(embed({"texts": texts, "query": True}), int8.embed_queries(texts), atol=1e-5)
            np.testing.assert_allclose(embed({"texts": texts[:1], "query": True})[0], int8.embed_query(texts[0]), atol=1e-5)
            np.testing.assert_allclose(embed({"texts": texts}), embedder.embed_documents(texts), atol=1e-5)
            for body in ({"texts": ["tea \\ud800"], "query": True}, {"texts": ["a", "tea \\ud800"], "query": True},
                         {"texts": ["tea \\ud800"]}):  # a lone surrogate escape: the caller's fault, not the server's
                raw = json.dumps(body).replace("\\\\ud800", "\\ud800")
                got = http.post("/v1/vector-stores/embed", content=raw, headers={
                    "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
                assert got.status_code in (400, 422) and got.json()["error"]["type"] == "InvalidInputError", got.text
    finally:
        keys.close()
        mos.close()
        served.close()
