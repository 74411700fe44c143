"""The service's fourth round of gaps (issue 13): ids in paths and tool arguments, staged writes a client
abandons, a retried write after its answer's first lifetime, and query caches a second user could time.

Every test here failed before its fix."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402

from memos_integrations import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402

LONG = "m" * 600  # over the service's 512-character id bound
LC = "/v1/vector-stores/langchain/add"


class Svc(NamedTuple):
    mos: MOS
    http: TestClient
    keys: dict[str, str]

    def call(self, who: str, method: str, url: str, **kw: Any) -> Any:
        return self.http.request(method, url, headers={"Authorization": f"Bearer {self.keys[who]}"}, **kw)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    home = tmp_path_factory.mktemp("gaps4")
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))
    keys = KeyStore.open(mos.home)
    for user in ("erin", "finn"):
        mos.create_user(user)
    mos.create_cube_for_user("e1", owner_id="erin")
    issued = {"erin": keys.create("erin")[0], "erin2": keys.create("erin")[0], "finn": keys.create("finn")[0]}
    app = create_app(mos, keys=keys, limits=Limits(rate=0, max_body_bytes=16 * 1024), mcp=False)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Svc(mos, http, issued)
    keys.close()
    mos.close()


def _refused_as_too_long(r: Any) -> None:
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["type"] == "InvalidInputError" and "at most" in err["message"], err


@pytest.mark.parametrize("method,url,body", [
    ("GET", f"/v1/memories/{LONG}?cube_id=e1", None),
    ("PATCH", f"/v1/memories/{LONG}?cube_id=e1", {"text": "new"}),
    ("DELETE", f"/v1/memories/{LONG}?cube_id=e1", None),
    ("GET", f"/v1/memories/{LONG}/history?cube_id=e1", None),
    ("POST", f"/v1/cubes/{'c' * 300}/share", {"user_id": "finn", "access": "read"}),
    ("DELETE", f"/v1/cubes/e1/share/{'u' * 300}", None),
])
def test_an_over_long_id_in_a_path_is_the_body_ids_invalid_input(svc: Svc, method: str, url: str, body: Any) -> None:
    _refused_as_too_long(svc.call("erin", method, url, json=body))


def test_an_id_at_the_bound_still_reaches_the_store(svc: Svc) -> None:
    r = svc.call("erin", "GET", f"/v1/memories/{'m' * 512}?cube_id=e1")
    assert r.status_code == 404, r.text  # looked up, and absent


async def test_mcp_tools_refuse_an_over_long_memory_id(svc: Svc) -> None:
    from mcp import Client

    from memos_integrations.server.mcp import build_server

    async with Client(build_server(svc.mos, lambda _h: "erin")) as client:
        for tool, args in (("get_memory", {}), ("update_memory", {"text": "x"}), ("forget_memory", {}),
                           ("memory_history", {}), ("memory_history", {"cube_id": "e1"})):
            r = await client.call_tool(tool, {"memory_id": LONG, **args})
            text = r.content[0].text  # type: ignore[union-attr]
            assert r.is_error and "InvalidInputError: memory_id is 600" in text and "at most 512" in text, (tool, text)
        r = await client.call_tool("get_memory", {"memory_id": "m1", "cube_id": "c" * 300})
        assert r.is_error and "at most 256" in r.content[0].text  # type: ignore[union-attr]


# -- 5. an embedding child that keeps dying ------------------------------------------------------------
def test_a_child_that_keeps_dying_at_start_is_backed_off_then_tried_again(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import sys
    import time

    from memos_integrations.errors import BackendError
    from memos_integrations.textual import embed_process as ep

    monkeypatch.setattr(ep, "BACKOFF_S", 0.5)
    process = ep.EmbedProcess(tmp_path, threads=None, start_timeout=10)
    process.argv = [sys.executable, "-c", "import sys; sys.exit(3)"]  # dies before saying it is ready
    for _ in range(ep.DEATHS):
        with pytest.raises(BackendError, match="could not load"):
            process.embed_queries(["a"])
    assert process.starts == ep.DEATHS
    began = time.monotonic()
    with pytest.raises(ep.EmbedProcessUnavailableError, match="retry in") as caught:
        process.embed_queries(["a"])  # fails fast: no fourth child
    assert time.monotonic() - began < 0.2 and process.starts == ep.DEATHS
    assert isinstance(caught.value, BackendError)  # the service's 503
    assert any("backing off" in r.getMessage() for r in caplog.records)
    time.sleep(0.6)
    with pytest.raises(BackendError, match="could not load"):
        process.embed_queries(["a"])  # the rest is over: one more try
    assert process.starts == ep.DEATHS + 1
    with pytest.raises(ep.EmbedProcessUnavailableError):
        process.embed_queries(["a"])  # and it died again within the window: resting again at once
    process.close()


# -- 4. query-vector caches are per user ---------------------------------------------------------------
async def test_a_second_users_identical_search_is_embedded_again_not_answered_from_the_first(tmp_path: Any) -> None:
    from mcp import Client

    from memos_integrations.server.mcp import build_server
    from memos_integrations.textual.batching import BatchedEmbedder
    from tests.unit.test_cache_scope_gaps4 import Counting

    inner = Counting()
    emb = BatchedEmbedder(inner, lambda texts: inner.embed_documents(texts))
    mos = MOS(tmp_path, embedder=emb)
    keys = KeyStore.open(mos.home)
    try:
        issued = {}
        for user in ("gus", "hal", "ivy"):
            mos.create_user(user)
            mos.create_cube_for_user(f"{user}-c", owner_id=user)
            mos.add(memory_content="I like genmaicha", mem_cube_id=f"{user}-c", user_id=user)
            issued[user] = keys.create(user)[0]
        app = create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False)
        with TestClient(app, raise_server_exceptions=False) as http:
            def search(who: str) -> None:
                r = http.get("/v1/memories/search", params={"q": "who likes genmaicha?"},
                             headers={"Authorization": f"Bearer {issued[who]}"})
                assert r.status_code == 200, r.text

            for who in ("gus", "gus", "hal", "hal"):
                search(who)
        assert inner.embedded.count("who likes genmaicha?") == 2  # once per user: gus's entry never answers hal
        async with Client(build_server(mos, lambda _h: "ivy")) as client:
            await client.call_tool("search_memory", {"query": "who likes genmaicha?"})
        assert inner.embedded.count("who likes genmaicha?") == 3  # an MCP caller is a user of its own too
    finally:
        emb.close()
        keys.close()
        mos.close()


# -- 1 and 2. staged writes: abandoned ones released, written ones answered for a day ------------------
@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    """A service whose staged answers live 0.3 s and whose abandoned parts are released after 0.3 s."""
    from memos_integrations.storage import staged_writes

    home = tmp_path_factory.mktemp("gaps4short")
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))
    keys = KeyStore.open(mos.home)
    mos.create_user("jo")
    mos.create_cube_for_user("j1", owner_id="jo")
    issued = {"jo": keys.create("jo")[0], "jo2": keys.create("jo")[0]}
    with pytest.MonkeyPatch.context() as patch:  # read when the app is made
        for name, value in (("TTL", 0.3), ("IDLE", 0.3), ("MAX_BYTES", 3000), ("MAX_USER_BYTES", 4000)):
            patch.setattr(staged_writes, name, value)
        app = create_app(mos, keys=keys, limits=Limits(rate=0, max_body_bytes=16 * 1024), mcp=False)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Svc(mos, http, issued)
    keys.close()
    mos.close()


def _part(svc: Svc, who: str, stage: str, part: int, texts: list[str], **more: Any) -> Any:
    body = {"cube_id": "j1", "kind": "document", "texts": texts, "stage": stage, "part": part, **more}
    return svc.call(who, "POST", LC, json=body)


def _count(svc: Svc, text: str) -> int:
    return sum(1 for it in svc.mos.cube("j1", user_id="jo").get_all(limit=1000) if it.text == text)


def test_an_aborted_split_write_releases_its_parts_at_once(short: Svc) -> None:
    assert _part(short, "jo", "given-up-0001", 0, ["x" * 2000]).status_code == 200
    assert _part(short, "jo", "next-one-0001", 0, ["y" * 2000]).status_code == 413  # the key's bound
    other = short.call("jo2", "DELETE", "/v1/vector-stores/stages/given-up-0001")  # another key: not theirs
    assert other.status_code == 200 and other.json() == {"released": 0}
    r = short.call("jo", "DELETE", "/v1/vector-stores/stages/given-up-0001")
    assert r.status_code == 200 and r.json() == {"released": 1}, r.text
    assert _part(short, "jo", "next-one-0002", 0, ["y" * 2000]).status_code == 200
    assert short.call("jo", "DELETE", "/v1/vector-stores/stages/next-one-0002").json() == {"released": 1}


def test_a_split_write_its_client_dropped_is_released_after_idle(short: Svc) -> None:
    import time

    assert _part(short, "jo", "dropped-0001", 0, ["x" * 2000]).status_code == 200  # then the connection died
    time.sleep(0.4)
    assert _part(short, "jo", "after-drop-01", 0, ["y" * 2000]).status_code == 200
    last = _part(short, "jo", "after-drop-01", 1, ["z"], parts=2)
    assert last.status_code == 200 and len(last.json()["ids"]) == 2, last.text


def test_a_one_part_write_retried_after_its_staged_answer_expired_is_answered_not_written(short: Svc) -> None:
    import time

    first = _part(short, "jo", "retried-0001", 0, ["genmaicha once"], parts=1)
    assert first.status_code == 200, first.text
    time.sleep(0.4)  # the staged answer (here 0.3 s, in service 10 minutes) is gone
    again = _part(short, "jo", "retried-0001", 0, ["genmaicha once"], parts=1)
    assert again.status_code == 200 and again.json() == first.json(), again.text
    again2 = _part(short, "jo2", "retried-0001", 0, ["genmaicha once"], parts=1)  # the user's other key
    assert again2.status_code == 200 and again2.json() == first.json(), again2.text
    assert _count(short, "genmaicha once") == 1
    time.sleep(0.4)
    other = _part(short, "jo", "retried-0001", 0, ["another text"], parts=1)  # the same id, another write
    assert other.status_code == 409 and other.json()["error"]["type"] == "ConflictError", other.text
    assert _count(short, "another text") == 0


_KILLED_AFTER_COMMIT = """
import os, signal, sys
from fastapi.testclient import TestClient
from langchain_core.embeddings.fake import DeterministicFakeEmbedding
from memos_integrations import MOS
from memos_integrations.server import KeyStore, Limits, create_app
from memos_integrations.storage.staged_writes import StagedWrites

home, key = sys.argv[1], sys.argv[2]
StagedWrites.done = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # after the cube's commit, before the answer
mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))
app = create_app(mos, keys=KeyStore.open(mos.home), limits=Limits(rate=0), mcp=False)
with TestClient(app) as http:
    h = {"Authorization": "Bearer " + key}
    body = {"cube_id": "k1", "kind": "document", "stage": "killed-00001"}
    assert http.post("ROUTE", json={**body, "part": 0, "texts": ["kill one"]}, headers=h).status_code == 200
    http.post("ROUTE", json={**body, "part": 1, "parts": 2, "texts": ["kill two"]}, headers=h)
    print("the process was not killed")
""".replace("ROUTE", LC)


def test_kill_9_between_the_cubes_commit_and_the_answer_then_a_retry_gets_the_answer_once(tmp_path: Any) -> None:
    import subprocess
    import sys
    from pathlib import Path

    mos = MOS(tmp_path, embedder=DeterministicFakeEmbedding(size=6))
    keys = KeyStore.open(mos.home)
    mos.create_user("kay")
    mos.create_cube_for_user("k1", owner_id="kay")
    key = keys.create("kay")[0]
    keys.close()
    mos.close()
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _KILLED_AFTER_COMMIT, str(tmp_path), key], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stdout + done.stderr
    mos = MOS(tmp_path, embedder=DeterministicFakeEmbedding(size=6))
    keys = KeyStore.open(mos.home)
    try:
        with TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False)) as http:
            body = {"cube_id": "k1", "kind": "document", "stage": "killed-00001", "part": 1, "parts": 2,
                    "texts": ["kill two"]}
            retry = http.post(LC, json=body, headers={"Authorization": f"Bearer {key}"})
        assert retry.status_code == 200 and len(retry.json()["ids"]) == 2, retry.text
        texts = sorted(it.text for it in mos.cube("k1", user_id="kay").get_all(limit=100))
        assert texts == ["kill one", "kill two"]  # written once, before the kill
    finally:
        keys.close()
        mos.close()


# -- the next gap of the same kind: POST /v1/memories retried after a lost answer -----------------------
def test_an_add_retried_with_its_idempotency_key_is_answered_not_written_twice(short: Svc) -> None:
    def add(who: str, text: str, key: str | None) -> Any:
        headers = {"Idempotency-Key": key} if key is not None else {}
        return short.http.post("/v1/memories", json={"cube_id": "j1", "text": text},
                               headers={"Authorization": f"Bearer {short.keys[who]}", **headers})

    first = add("jo", "sencha twice?", "add-once-1")
    assert first.status_code == 201, first.text
    again = add("jo", "sencha twice?", "add-once-1")  # the answer was lost on the way back: sent again
    assert again.status_code == 201 and again.json() == first.json(), again.text
    assert _count(short, "sencha twice?") == 1
    other = add("jo", "another add", "add-once-1")
    assert other.status_code == 409 and other.json()["error"]["type"] == "ConflictError", other.text
    assert _count(short, "another add") == 0
    assert add("jo", "no key: written", None).status_code == add("jo", "no key: written", None).status_code == 201
    assert _count(short, "no key: written") == 2  # without a key two requests are two adds (as documented)
    assert add("jo", "x", "k" * 300).status_code == 422  # keys are bounded like ids


def test_a_recorded_writes_texts_are_embedded_before_its_transaction_once(tmp_path: Any) -> None:
    """The record commits with the write, so the write runs in the cube's transaction; its texts are embedded
    before it (the transaction holds the cube's other readers and writers of this process), and only once."""
    from tests.unit.test_cache_scope_gaps4 import Counting

    class InTx(Counting):
        mem: Any = None

        def embed_documents(self, texts: list[str]) -> Any:
            import numpy as np

            conn = self.mem.store.db._conn()
            self.embedded.extend(f"{t} (in a transaction)" if conn.in_transaction else t for t in texts)
            return np.tile(np.array([1.0, 0.5, 0.25, 0.0], np.float32), (len(texts), 1))

    emb = InTx()
    mos = MOS(tmp_path, embedder=emb)
    keys = KeyStore.open(mos.home)
    try:
        mos.create_user("lu")
        mos.create_cube_for_user("l1", owner_id="lu")
        emb.mem = mos._cube("l1").text_mem
        key = keys.create("lu")[0]
        with TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False)) as http:
            h = {"Authorization": f"Bearer {key}"}
            body = {"cube_id": "l1", "kind": "document", "texts": ["t1", "t2", "t1 again"], "stage": "before-tx-01",
                    "part": 0, "parts": 1}
            assert http.post(LC, json=body, headers=h).status_code == 200
            added = http.post("/v1/memories", json={"cube_id": "l1", "text": "a fact"},
                              headers={**h, "Idempotency-Key": "fact-1"})
            assert added.status_code == 201, added.text
        assert sorted(emb.embedded) == ["a fact", "t1", "t1 again", "t2"], emb.embedded
    finally:
        keys.close()
        mos.close()


def test_the_client_releases_a_split_write_whose_middle_request_failed(svc: Svc) -> None:
    """A ``RemoteCube`` write split over several requests that fails midway tells the service to release
    the parts it had staged (they no longer count against the key's bounds), then raises."""
    import json

    import httpx

    from memos_integrations.errors import BackendError
    from memos_integrations.langchain import MemOSVectorStore
    from memos_integrations.remote import RemoteCube

    stages: list[str] = []

    def fail_second_part(response: httpx.Response) -> None:
        if response.request.url.path == LC:
            body = json.loads(response.request.content)
            stages.append(body["stage"])
            if body["part"] == 1:
                raise httpx.ReadError("the connection dropped", request=response.request)

    client = TestClient(svc.http.app, raise_server_exceptions=False)
    client.event_hooks = {"request": [], "response": [fail_second_part]}
    with client:
        store = MemOSVectorStore(RemoteCube("http://testserver", svc.keys["erin"], cube_id="e1", client=client),
                                 user_id="erin")
        with pytest.raises(BackendError, match="nothing was written"):
            store.add_texts(["p" * 6000 + str(i) for i in range(6)])  # over 16 KiB: three or more requests
    assert len(set(stages)) == 1 and len(stages) == 2
    # the parts staged before the failure are gone: nothing is left to release
    assert svc.call("erin", "DELETE", f"/v1/vector-stores/stages/{stages[0]}").json() == {"released": 0}
