"""Concurrent adds to different users' cubes share one embedding call in the service's child process
(textual/batching.py, textual/embed_process.py): each add stores exactly its own text's vector (the bits
a lone add stores), one caller's bad text fails only that caller, a child killed mid-batch fails those
adds with a MemosError and writes nothing, and an acknowledged add survives a kill -9 of the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from memos_integrations.errors import BackendError, InvalidInputError, MemosError  # noqa: E402
from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server.service import serving_embedder  # noqa: E402
from memos_integrations.textual.embed import MiniLMEmbedder, item_vectors  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
USERS = ("ana", "ben", "cai", "dev", "eve")
#: lengths within the batcher's 2x (plus slack) of each other, so the five share one call
TEXTS = ["Ana keeps bees on the roof of the library.", "Ben's train leaves at 07:42 from platform 9.",
         "Cai runs the Thursday chess club.", "Dev is allergic to penicillin and to cats, but not to dogs or horses.",
         "Eve moved to Tromsø in March 2024 🙂"]


class Home:
    def __init__(self, root: Path) -> None:
        self.embedder = serving_embedder(root, "int8", embed_process=True)  # what `memcube serve` builds
        self.mos = MOS(root, embedder=self.embedder)
        for user in USERS:
            self.mos.create_user(user)
            self.mos.create_cube_for_user(f"{user}_c", owner_id=user)

    def cube(self, user: str) -> Any:
        return self.mos._cube(f"{user}_c")

    def add(self, user: str, text: str) -> Any:
        return self.mos.add(memory_content=text, user_id=user, kind="fact")[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None, embedder: Any) -> Iterator[Home]:
    h = Home(tmp_path_factory.mktemp("home"))
    yield h
    h.mos.close()
    h.embedder.close()


def _held_batch(home: Home, calls: list[list[str]], then: Callable[[int, list[str]], None] | None = None) -> Callable[..., Any]:
    """Make the next document calls one batch: the first call (a plug text) waits until ``n`` texts queue
    behind it. Returns ``run(jobs)``: runs the jobs in threads, each result or exception in order."""
    batcher = home.embedder.doc_batcher
    inner = home.embedder.process.embed_documents
    entered, opened = threading.Event(), threading.Event()

    def embed_many(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        if len(calls) == 1:
            entered.set()
            assert opened.wait(20)
        elif then is not None:
            then(len(calls), texts)
        return inner(texts)  # type: ignore[no-any-return]

    def run(jobs: list[Callable[[], Any]]) -> list[Any]:
        batcher._embed_many = embed_many
        got: list[Any] = [None] * len(jobs)

        def one(i: int, job: Callable[[], Any]) -> None:
            try:
                got[i] = job()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertions
                got[i] = exc

        plug = threading.Thread(target=lambda: home.embedder.embed_documents(["plug text holding the batcher"]))
        plug.start()
        try:
            assert entered.wait(20)
            threads = [threading.Thread(target=one, args=(i, job)) for i, job in enumerate(jobs)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 20
            while len(batcher._queue) < len(jobs):
                assert time.monotonic() < deadline, len(batcher._queue)
                time.sleep(0.005)
            opened.set()
            for t in [plug, *threads]:
                t.join(60)
        finally:
            opened.set()
            batcher._embed_many = inner
        return got

    return run


def _stored(cube: Any, item_id: str) -> np.ndarray:
    [(_, rid)] = cube.store.indexable([item_id])
    _, matrix = cube.store.vectors_for([rid])
    return matrix[0]  # type: ignore[no-any-return]


def test_concurrent_adds_across_users_cubes_store_each_texts_own_vector_bit_for_bit(home: Home) -> None:
    calls: list[list[str]] = []
    run = _held_batch(home, calls)
    items = run([lambda u=u, t=t: home.add(u, t) for u, t in zip(USERS, TEXTS)])
    assert [len(c) for c in calls] == [1, len(USERS)]  # the five adds were one call of the child
    alone = MiniLMEmbedder()  # in this process, each text alone: what a lone add would store
    for user, text, item in zip(USERS, TEXTS, items):
        assert not isinstance(item, BaseException), item
        assert item.text == text and item.user_id == user
        cube = home.cube(user)
        want = item_vectors(alone, [cube.get(item.id)])[0]
        np.testing.assert_array_equal(_stored(cube, item.id), want)  # bit for bit, not close
        hit = cube.search(text, user_id=user, top_k=1)[0]
        assert hit.item.id == item.id
        assert not any(h.item.id == item.id for h in home.cube(USERS[0] if user != USERS[0] else USERS[1])
                       .search(text, user_id=user, top_k=5))  # and in its own cube only


def test_one_callers_bad_text_fails_only_that_caller_in_a_shared_batch(home: Home) -> None:
    calls: list[list[str]] = []
    run = _held_batch(home, calls)
    good = ["first good text in the shared batch", "second good text, somewhat longer than the first"]
    got = run([lambda: home.embedder.embed_documents([good[0]]),
               lambda: home.embedder.embed_documents(["a lone surrogate \ud800 here"]),
               lambda: home.embedder.embed_documents([good[1]])])
    assert isinstance(got[1], InvalidInputError), got[1]
    alone = MiniLMEmbedder()
    np.testing.assert_array_equal(got[0][0], alone.embed_documents([good[0]])[0])
    np.testing.assert_array_equal(got[2][0], alone.embed_documents([good[1]])[0])
    # and the add route never sends such a text: it is refused before anything is embedded or written
    before = home.cube("ana").store.count()
    with pytest.raises(InvalidInputError):
        home.add("ana", "refused \udfff")
    assert home.cube("ana").store.count() == before


def test_a_child_killed_mid_batch_fails_those_adds_writes_nothing_and_the_next_adds_succeed(home: Home) -> None:
    process = home.embedder.process
    pid = process.pid
    assert pid is not None

    def kill(n: int, texts: list[str]) -> None:
        if n == 2:
            os.kill(pid, signal.SIGKILL)  # dies with the adds' batch on its way: it can never answer it

    counts = {u: home.cube(u).store.count() for u in USERS}
    run = _held_batch(home, [], kill)
    texts = [f"{u} wrote this while the child died" for u in USERS]
    got = run([lambda u=u, t=t: home.add(u, t) for u, t in zip(USERS, texts)])
    assert all(isinstance(e, BackendError) and isinstance(e, MemosError) and "retry" in str(e) for e in got), got
    for user in USERS:  # no half-applied write: nothing stored, nothing queued for the index
        cube = home.cube(user)
        assert cube.store.count() == counts[user]
        assert not [i for i in cube.get_all(limit=1000) if "child died" in i.text]
    after = [home.add(u, f"{u} after the restart") for u in USERS]
    assert all(i.text.endswith("after the restart") for i in after)
    assert process.pid not in (None, pid)


_KILLED_AFTER_ANSWER = """
import os, signal, sys
from fastapi.testclient import TestClient
from langchain_core.embeddings.fake import DeterministicFakeEmbedding
from memos_integrations import MOS
from memos_integrations.server import KeyStore, Limits, create_app

home, key = sys.argv[1], sys.argv[2]
mos = MOS(home, embedder=DeterministicFakeEmbedding(size=8))
app = create_app(mos, keys=KeyStore.open(mos.home), limits=Limits(rate=0), mcp=False)
with TestClient(app) as http:
    h = {"Authorization": "Bearer " + key}
    for text in ("Kay's spare key is under the blue flowerpot.", "Kay's bike lock code is 5813."):
        answer = http.post("/v1/memories", json={"text": text}, headers=h)
        assert answer.status_code == 201, answer.text
        print(answer.json()["items"][0]["id"], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # right after the answers: the index writes are still queued
"""


def test_an_acknowledged_add_survives_kill_9_right_after_the_answer_and_the_next_search_finds_it(tmp_path: Path) -> None:
    from langchain_core.embeddings.fake import DeterministicFakeEmbedding

    from memos_integrations.server import KeyStore

    mos = MOS(tmp_path, embedder=DeterministicFakeEmbedding(size=8))
    keys = KeyStore.open(mos.home)
    mos.create_user("kay")
    mos.create_user("lou")
    mos.create_cube_for_user("k1", owner_id="kay")
    mos.create_cube_for_user("l1", owner_id="lou")
    key = keys.create("kay")[0]
    keys.close()
    mos.close()
    done = subprocess.run([sys.executable, "-c", _KILLED_AFTER_ANSWER, str(tmp_path), key], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stdout + done.stderr
    acknowledged = done.stdout.split()
    assert len(acknowledged) == 2
    mos = MOS(tmp_path, embedder=DeterministicFakeEmbedding(size=8))
    try:
        cube = mos._cube("k1")  # the open replays the outbox the kill left
        assert cube.store.outbox() == [] and acknowledged[0] in cube.index.ids()
        hits = mos.cube("k1", user_id="kay").search("where is the spare key under the flowerpot", top_k=1)
        assert hits[0].item.id == acknowledged[0]
        assert sorted(i.id for i in cube.get_all(limit=10)) == sorted(acknowledged)  # once each
        assert all(len(cube.history(i)) == 1 for i in acknowledged)
        assert mos.cube("l1", user_id="lou").search("spare key flowerpot", top_k=5) == []  # another user's cube
    finally:
        mos.close()
