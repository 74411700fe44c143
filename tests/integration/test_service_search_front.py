"""The fast search fronts embed a query on the event loop, then run the route on their own threads
(server/search_front.py): the same answers as the FastAPI route that embeds in its worker thread, the query
embedded once, each user's vector their own, and an embedding process that dies mid-search is a 503 for
the searches it held while the service keeps serving."""

from __future__ import annotations

import json
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.textual.batching import BatchedEmbedder, batched  # noqa: E402
from tests.integration.stand_in_child import PREAMBLE  # noqa: E402

TEXTS = ["Caroline went to the LGBTQ support group on 7 May 2023.", "Melanie painted a sunrise over the lake last year.",
         "Caroline is researching adoption agencies.", "Melanie signed up for a pottery class.",
         "The dog is called Oscar and loves the beach.", "Jon opened his dance studio in June."]
QUERIES = ["When did Caroline go to the support group?", "What did Melanie paint?", "who likes the beach", "pottery",
           "What is Caroline researching, and when did Jon open the studio in June of that year?"]


class Served(NamedTuple):
    mos: MOS
    emb: Any
    fast: TestClient
    slow: TestClient
    auth: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Served]:
    emb = batched(embedder)
    mos = MOS(tmp_path_factory.mktemp("front") / "home", embedder=emb)
    keys = KeyStore.open(mos.home / "mos.db")
    auth = {}
    for user in ("alice", "bob"):
        mos.create_user(user)
        mos.create_cube_for_user(f"{user}-c", owner_id=user)
        for text in TEXTS:
            mos.add(memory_content=text, mem_cube_id=f"{user}-c", user_id=user)
        auth[user] = {"Authorization": f"Bearer {keys.create(user)[0]}"}
    limits = Limits(rate=0)
    fast = TestClient(create_app(mos, keys=keys, limits=limits, mcp=False, search_threads=2))
    slow = TestClient(create_app(mos, keys=keys, limits=limits, mcp=False, fast_path=False))  # FastAPI's route
    with fast, slow:
        yield Served(mos, emb, fast, slow, auth)
    keys.close()
    mos.close()
    emb.close()


def _hits(r: Any) -> list[Any]:
    assert r.status_code == 200, r.text
    return [(h["item"]["id"], h["score"], h["ranks"]) for h in r.json()["hits"]]


def test_a_search_embedded_ahead_answers_exactly_what_the_route_embedding_it_answers(served: Served) -> None:
    front = served.fast.app.state.searches  # type: ignore[attr-defined]
    assert front.threads == 2 and front.embedder is served.emb
    for q in QUERIES:
        for user in ("alice", "bob"):
            served.emb.clear_query_cache()
            ahead, texts = front.embedded_ahead, served.emb.batcher.texts
            got = _hits(served.fast.get("/v1/memories/search", params={"q": q, "k": 4}, headers=served.auth[user]))
            assert front.embedded_ahead == ahead + 1  # the front embedded it ...
            assert served.emb.batcher.texts == texts + 1  # ... once: the route used that vector
            posted = _hits(served.fast.post("/v1/memories/search", json={"query": q, "k": 4, "plan": "learned"},
                                            headers=served.auth[user]))
            served.emb.clear_query_cache()
            assert got == _hits(served.slow.get("/v1/memories/search", params={"q": q, "k": 4}, headers=served.auth[user]))
            assert posted == _hits(served.slow.post("/v1/memories/search", json={"query": q, "k": 4, "plan": "learned"},
                                                    headers=served.auth[user]))
            assert got  # same hits, same order, same scores and ranks


def _answer(r: Any) -> Any:
    body = r.json()
    body.get("error", {}).pop("request_id", None)  # one per request
    return body


def test_what_the_front_does_not_embed_ahead_is_the_routes_own_answer(served: Served) -> None:
    front = served.fast.app.state.searches  # type: ignore[attr-defined]
    long = "where is the dog? " * 150  # over 2,000 characters: the engine embeds a reduced text
    for body in ({"query": long, "k": 3}, {"query": "   ", "k": 3}, {"query": "bad \ud800 surrogate", "k": 3},
                 {"query": "tea", "k": 10_000}, {"query": "tea", "cube_id": "alice-c"}):
        ahead = front.embedded_ahead
        r = served.fast.post("/v1/memories/search", content=json.dumps(body), headers={
            **served.auth["bob"], "Content-Type": "application/json"})
        s = served.slow.post("/v1/memories/search", content=json.dumps(body), headers={
            **served.auth["bob"], "Content-Type": "application/json"})
        assert (r.status_code, _answer(r)) == (s.status_code, _answer(s)), body
        if body["query"] in (long, "   "):
            assert front.embedded_ahead == ahead  # left to the route
    assert served.fast.get("/v1/memories/search", params={"q": "tea"}, headers={"Authorization": "Bearer nope"}
                           ).status_code == 401


def _bytes(r: Any) -> tuple[int, bytes]:
    return r.status_code, r.content.replace(r.headers["x-request-id"].encode(), b"<rid>")


#: searches the route refuses (or answers without searching) before it would embed: over-large k, another
#: user's cube, no such cube, acting as another user, a user with no cube yet (carol), GET and POST alike
REFUSED = [("POST", {"query": "tea", "k": 10_000}), ("POST", {"query": "tea", "k": 101, "plan": "learned"}),
           ("POST", {"query": "tea", "cube_id": "alice-c"}), ("POST", {"query": "tea", "cube_id": "no-such-c"}),
           ("POST", {"query": "tea", "user_id": "alice"}), ("POST", {"query": "tea", "cube_id": "alice-c", "k": 500}),
           ("GET", {"q": "tea", "k": "101"}), ("GET", {"q": "tea", "cube_id": "alice-c"}),
           ("GET", {"q": "tea", "cube_id": "no-such-c"}), ("GET", {"q": "tea", "user_id": "alice"}),
           ("GET", {"q": "tea", "cube_id": "bob-c", "k": "1000"})]


@pytest.mark.parametrize("who", ["bob", "carol"])
def test_a_refused_search_never_reaches_the_embedder_and_answers_byte_for_byte_as_the_route(served: Served,
                                                                                             who: str) -> None:
    front = served.fast.app.state.searches  # type: ignore[attr-defined]
    headers = dict(served.auth["bob"])
    if who == "carol":  # a user with no cube yet: the route answers no hits without searching
        if "carol" not in {u["user_id"] for u in served.mos.list_users(user_id="alice")}:
            served.mos.create_user("carol")
        keys = KeyStore.open(served.mos.home / "mos.db")
        headers = {"Authorization": f"Bearer {keys.create('carol')[0]}"}
        keys.close()
    requests = [*REFUSED, ("POST", {"query": "tea"}), ("GET", {"q": "tea"})] if who == "carol" else REFUSED
    for method, params in requests:
        served.emb.clear_query_cache()
        ahead, texts = front.embedded_ahead, served.emb.batcher.texts
        if method == "GET":
            answers = [c.get("/v1/memories/search", params=params, headers=headers) for c in (served.fast, served.slow)]
        else:
            answers = [c.post("/v1/memories/search", content=json.dumps(params),
                              headers={**headers, "Content-Type": "application/json"}) for c in (served.fast, served.slow)]
        fast, slow = (_bytes(r) for r in answers)
        assert fast == slow, (method, params)
        assert fast[0] in (200, 403, 404, 422), fast
        assert front.embedded_ahead == ahead, (method, params)  # the front did not embed it ...
        assert served.emb.batcher.texts == texts, (method, params)  # ... and nothing else did


def test_another_users_cube_and_no_such_cube_take_one_path(served: Served) -> None:
    """The same refusal from the same check, neither embedded: no answer, count or cost tells them apart."""
    front = served.fast.app.state.searches  # type: ignore[attr-defined]
    seen = []
    for cube in ("alice-c", "no-such-c"):
        ahead, in_route, texts = front.embedded_ahead, front.embedded_in_route, served.emb.batcher.texts
        r = served.fast.get("/v1/memories/search", params={"q": "tea", "cube_id": cube}, headers=served.auth["bob"])
        seen.append((r.status_code, r.json()["error"]["type"], r.json()["error"]["message"].replace(cube, "<cube>"),
                     front.embedded_ahead - ahead, front.embedded_in_route - in_route, served.emb.batcher.texts - texts))
    assert seen[0] == seen[1] == (404, "CubeNotFoundError", seen[0][2], 0, 0, 0)


def test_checks_run_first_once_per_hint_and_a_revoked_share_is_checked_first_again(served: Served) -> None:
    """Searches that passed their checks lately embed at once (no extra hop); when the share behind them is
    revoked, one search is embedded in vain and answered the route's refusal, and the next is checked first."""
    front = served.fast.app.state.searches  # type: ignore[attr-defined]
    served.mos.share_cube_with_user("alice-c", "bob", "read", user_id="alice")
    params = {"q": "pottery", "cube_id": "alice-c", "k": "2"}
    try:
        checked = front.checked_first
        for _ in range(3):
            served.emb.clear_query_cache()
            assert _hits(served.fast.get("/v1/memories/search", params=params, headers=served.auth["bob"]))
        assert front.checked_first == checked + 1
    finally:
        served.mos.unshare_cube("alice-c", "bob", user_id="alice")
    answers = []
    for _ in range(2):
        served.emb.clear_query_cache()
        ahead = front.embedded_ahead
        r = served.fast.get("/v1/memories/search", params=params, headers=served.auth["bob"])
        answers.append((r.status_code, front.embedded_ahead - ahead))
        assert _bytes(r) == _bytes(served.slow.get("/v1/memories/search", params=params, headers=served.auth["bob"]))
    assert answers == [(404, 1), (404, 0)]  # the stale hint cost one embedding, then the checks ran first


def test_alices_vector_never_answers_bobs_search(served: Served) -> None:
    served.emb.clear_query_cache()
    texts = served.emb.batcher.texts
    for user in ("alice", "alice", "bob", "bob"):
        _hits(served.fast.get("/v1/memories/search", params={"q": "Who went to the support group?"},
                              headers=served.auth[user]))
    assert served.emb.batcher.texts == texts + 2  # once per user: alice's vector (cached or given) never served bob


# -- the embedding process dies mid-search ---------------------------------------------------------------
_CHILD = PREAMBLE + textwrap.dedent('''
    while True:
        n = texts()
        if not os.path.exists(arg):  # the first child dies with its first batch on the way (arg: a marker file)
            open(arg, "w").close()
            os._exit(9)
        head = json.dumps({"ok": True, "rows": n, "dim": 384}).encode()
        send(struct.pack(">I", len(head)) + head + struct.pack("<f", 384 ** -0.5) * (384 * n))
''')


class _Docs:
    """Documents for the cube (the adds); queries go to the child."""

    name, dimension, fingerprint = "docs", 384, "docs-v1"

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return np.full((len(texts), 384), 384 ** -0.5, np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def test_a_child_that_dies_mid_search_is_a_503_and_the_service_keeps_serving(tmp_path: Path) -> None:
    from memos_integrations.textual.embed_process import EmbedProcess

    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    process = EmbedProcess(tmp_path, threads=None, timeout=10)
    process.argv = [sys.executable, str(script), str(tmp_path / "died")]
    emb = BatchedEmbedder(_Docs(), process.embed_queries, process=process)
    mos = MOS(tmp_path / "home", embedder=emb)
    keys = KeyStore.open(mos.home / "mos.db")
    try:
        mos.create_user("carl")
        mos.create_cube_for_user("carl-c", owner_id="carl")
        mos.add(memory_content="the spare key is under the mat", mem_cube_id="carl-c", user_id="carl")
        auth = {"Authorization": f"Bearer {keys.create('carl')[0]}"}
        with TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False, search_threads=1),
                        raise_server_exceptions=False) as http:
            r = http.get("/v1/memories/search", params={"q": "where is the key?"}, headers=auth)
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["type"] == "EmbedProcessError" and "retry" in err["message"], err
            assert http.get("/v1/memories", headers=auth).status_code == 200  # still serving
            r = http.get("/v1/memories/search", params={"q": "where is the key?"}, headers=auth)
            assert r.status_code == 200 and r.json()["hits"], r.text  # a fresh child answers the retry
        assert process.starts == 2
    finally:
        keys.close()
        mos.close()
        emb.close()


def test_one_users_stuck_searches_never_hold_every_search_thread(served: Served) -> None:
    """Alice's cube's database is held (a long write); her searches wait in the route. With two search threads,
    at most one of them waits on a thread: bob's search still runs, and alice's all finish once it is free."""
    from concurrent.futures import ThreadPoolExecutor

    front = served.fast.app.state.searches  # type: ignore[attr-defined]
    db = served.mos._cube("alice-c").text_mem.store.db
    with ThreadPoolExecutor(4) as pool:
        with db.lock:  # type: ignore[attr-defined]  # what a write transaction on alice's cube holds (SQLite)
            stuck = [pool.submit(served.fast.get, "/v1/memories/search", params={"q": f"stuck {i}"},
                                 headers=served.auth["alice"]) for i in range(3)]
            for _ in range(500):
                if front._per_user._held.get("alice", (None, 0))[1] == 3:
                    break
                threading.Event().wait(0.01)
            bob = pool.submit(served.fast.get, "/v1/memories/search", params={"q": "pottery"}, headers=served.auth["bob"])
            assert _hits(bob.result(timeout=20))  # answered while alice's three still wait
            assert not any(f.done() for f in stuck)
        for f in stuck:
            assert f.result(timeout=20).status_code == 200
    assert "alice" not in front._per_user._held  # nothing kept per user once idle


def test_an_app_started_again_after_shutdown_still_searches(served: Served) -> None:
    app = served.fast.app
    for _ in range(2):  # each client's exit runs the app's shutdown (the search threads stop)
        with TestClient(app) as again:
            _hits(again.get("/v1/memories/search", params={"q": "pottery"}, headers=served.auth["bob"]))
