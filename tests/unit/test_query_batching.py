"""Micro-batched query embeddings (memos_integrations.textual.batching): each caller gets the vector of its
own text, a failing batch fails every caller with a MemosError, closing never hangs, and two users'
concurrent searches through one batcher each get their own hits.

A gate holds the batcher's first embedding call until the other callers are queued, so the texts that
follow are embedded together in one call (what a loaded service does) instead of one by one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos_integrations.errors import BackendError, InvalidInputError, MemosError
from memos_integrations.textual.batching import BatchedEmbedder, QueryBatcher, batched


class Gate:
    """Wraps an ``embed_many``: its first call waits until ``queued(n)`` says ``n`` texts wait behind it."""

    def __init__(self, embed_many: Callable[[list[str]], np.ndarray]) -> None:
        self.embed_many = embed_many
        self.open = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        if not self.entered.is_set():
            self.entered.set()
            assert self.open.wait(20), "the test never opened the gate"
        return self.embed_many(texts)


def wait_queued(batcher: QueryBatcher, n: int) -> None:
    deadline = time.monotonic() + 20
    while len(batcher._queue) < n:
        assert time.monotonic() < deadline, f"only {len(batcher._queue)} of {n} texts were queued"
        time.sleep(0.005)


def run_all(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run each call in its own thread; their results (or the exception each raised), in order."""
    out: list[Any] = [None] * len(calls)

    def one(i: int) -> None:
        try:
            out[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001  # the test inspects what each caller got
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    return [out, threads]  # the caller joins after opening the gate


def test_each_caller_gets_the_vector_of_its_own_text(embedder: Any) -> None:
    gate = Gate(embedder.embed_documents)
    batcher = QueryBatcher(gate)
    first = threading.Thread(target=batcher.embed, args=("the first query holds the worker",))
    first.start()
    assert gate.entered.wait(20)
    texts = [f"question {i}: what did user {i} say about {w}?" for i, w in enumerate(["tea", "cars", "rain", "jazz"] * 4)]
    out, threads = run_all([partial(batcher.embed, t) for t in texts])
    wait_queued(batcher, len(texts))
    gate.open.set()
    for t in [first, *threads]:
        t.join(20)
    assert sorted(gate.batches[1]) == sorted(texts), "the queued texts were embedded in one call"
    for text, got in zip(texts, out, strict=True):
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, embedder.embed_documents([text])[0], atol=1e-5)
    batcher.close()


def test_a_failing_text_fails_only_its_own_caller_with_a_memos_error(embedder: Any) -> None:
    """One caller's text that breaks the embedder fails that caller alone; the texts that shared its call
    are embedded again and answered; a MemosError reaches its caller as it is; nothing hangs."""
    broken = threading.Event()

    def fragile(texts: list[str]) -> np.ndarray:
        if "boom" in texts or broken.is_set():
            raise RuntimeError("the model fell over")
        if "refused" in texts:
            raise InvalidInputError("this embedder refuses that text")
        return embedder.embed_documents(texts)  # type: ignore[no-any-return]

    gate = Gate(fragile)
    batcher = QueryBatcher(gate)
    first = threading.Thread(target=lambda: batcher.embed("hold"))
    first.start()
    assert gate.entered.wait(20)
    out, threads = run_all([partial(batcher.embed, t) for t in ("boom", "bomb", "bump", "refused")])
    wait_queued(batcher, 4)
    gate.open.set()
    for t in [first, *threads]:
        t.join(20)
    assert isinstance(out[0], BackendError) and isinstance(out[0].__cause__, RuntimeError) and "retry" in str(out[0])
    assert all(isinstance(v, np.ndarray) for v in out[1:3]), out
    assert isinstance(out[3], InvalidInputError) and "refuses" in str(out[3])
    broken.set()  # a model that fails every call: every caller gets a MemosError, none waits forever
    out, threads = run_all([partial(batcher.embed, f"any {i}") for i in range(4)])
    for t in threads:
        t.join(20)
    assert all(isinstance(e, MemosError) for e in out), out
    broken.clear()
    assert batcher.embed("fine").shape == (384,)
    batcher.close()


def test_close_with_requests_queued_fails_them_at_once_and_refuses_new_ones(embedder: Any) -> None:
    gate = Gate(embedder.embed_documents)
    batcher = QueryBatcher(gate)
    out_first, (first,) = run_all([lambda: batcher.embed("in flight")])
    assert gate.entered.wait(20)
    out, threads = run_all([partial(batcher.embed, f"queued {i}") for i in range(5)])
    wait_queued(batcher, 5)
    start = time.monotonic()
    batcher.close(timeout=0.1)  # the call in flight is still held: close must not wait for it
    for t in threads:
        t.join(5)
    assert time.monotonic() - start < 3
    assert all(isinstance(e, BackendError) and "shutting down" in str(e) for e in out), out
    with pytest.raises(BackendError, match="closed"):
        batcher.embed("too late")
    gate.open.set()  # the call in flight still answers its caller
    first.join(20)
    assert isinstance(out_first[0], np.ndarray)


def test_an_abandoned_caller_does_not_block_the_others(embedder: Any) -> None:
    """A caller that stops waiting (a request whose client went away) leaves its text queued; the batch
    it lands in is embedded as usual and everyone else is answered."""
    gate = Gate(embedder.embed_documents)
    batcher = QueryBatcher(gate)
    run_all([lambda: batcher.embed("hold")])
    assert gate.entered.wait(20)
    abandoned = threading.Thread(target=batcher.embed, args=("nobody reads this",), daemon=True)
    abandoned.start()
    out, threads = run_all([partial(batcher.embed, f"still wanted {i}") for i in range(3)])
    wait_queued(batcher, 4)
    gate.open.set()
    for t in threads:
        t.join(20)
    assert all(isinstance(v, np.ndarray) for v in out)
    batcher.close()


def test_batched_wraps_minilm_only_and_keeps_its_identity(embedder: Any) -> None:
    wrapped = batched(embedder)
    assert isinstance(wrapped, BatchedEmbedder) and batched(wrapped) is wrapped
    assert (wrapped.name, wrapped.dimension, wrapped.fingerprint) == (embedder.name, embedder.dimension, embedder.fingerprint)

    class Prefixed:  # a query is not embedded as a document: batching through embed_documents would be wrong
        name, dimension, fingerprint = "prefixed", 3, "x"

        def embed_documents(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 3), dtype=np.float32)

        def embed_query(self, text: str) -> np.ndarray:
            return np.zeros(3, dtype=np.float32)

    other = Prefixed()
    assert batched(other) is other
    wrapped.close()


def test_two_users_searching_at_once_through_one_batcher_get_their_own_hits(tmp_path: Path, embedder: Any) -> None:
    from memos_integrations.mos import MOS

    gate = Gate(embedder.embed_documents)
    shared = BatchedEmbedder(embedder, gate)
    mos = MOS(tmp_path / "home", embedder=shared)
    facts = {"alice": ["Alice drinks genmaicha every morning", "Alice's tea pot is cast iron", "Alice hates coffee"],
             "bob": ["Bob restores a 1967 Mustang", "Bob's car needs new brakes", "Bob drives to Lyon in May"]}
    for user, texts in facts.items():
        mos.create_user(user)
        cube = mos.create_cube_for_user(f"{user}_c", owner_id=user, user_id=user)
        for text in texts:
            mos.cube(cube, user_id=user, access="write").add(memory=text, kind="fact")
    queries = {"alice": ["what tea does she drink?", "what is her pot made of?"],
               "bob": ["which car is being restored?", "where is the trip in May?"]}
    gate.open.set()
    expected = {(u, q): [h.item.id for h in mos.cube(f"{u}_c", user_id=u).search(q, top_k=2)]
                for u, qs in queries.items() for q in qs}  # one at a time: the answers to match
    shared.clear_query_cache()
    gate.open.clear()
    gate.entered.clear()
    run_all([lambda: shared.embed_query("hold the worker")])
    assert gate.entered.wait(20)
    jobs = [(u, q) for _ in range(3) for u, qs in queries.items() for q in qs]
    def search(user: str, query: str) -> list[Any]:
        return [h.item for h in mos.cube(f"{user}_c", user_id=user).search(query, top_k=2)]

    out, threads = run_all([partial(search, u, q) for u, q in jobs])
    wait_queued(shared.batcher, len(queries["alice"]) + len(queries["bob"]))  # repeats may hit the cache
    gate.open.set()
    for t in threads:
        t.join(20)
    assert any({"alice", "bob"} <= {u for u, qs in queries.items() for q in qs if q in b} for b in gate.batches[1:]), \
        "both users' queries were embedded in one call"
    own = {u: set(texts) for u, texts in facts.items()}
    for (user, query), items in zip(jobs, out, strict=True):
        assert not isinstance(items, BaseException), items
        assert {i.text for i in items} <= own[user]
        assert [i.id for i in items] == expected[(user, query)]
    mos.close()
    shared.close()


def test_concurrent_one_text_document_embeddings_share_a_pass_and_each_gets_its_own_row(embedder: Any) -> None:
    """A fast add embeds one text: concurrent adds (many users on the service) share a forward pass in fp32,
    each row what the text gives alone; several texts, a closed batcher, an unbatched embedder: direct."""
    wrapped = batched(embedder)
    assert wrapped.doc_batcher is not None
    gate = Gate(wrapped.doc_batcher._embed_many)
    wrapped.doc_batcher._embed_many = gate
    texts = ["I adopted a dog named Biscuit", "We went camping at the lake", "pottery class on Tuesday"]
    out, threads = run_all([partial(wrapped.embed_documents, [t]) for t in texts])
    assert gate.entered.wait(20)
    # every text is in the gated first batch or queued behind it (the first batch may already hold several)
    deadline = time.monotonic() + 20
    while len(gate.batches[0]) + len(wrapped.doc_batcher._queue) < len(texts):
        assert time.monotonic() < deadline, (gate.batches, len(wrapped.doc_batcher._queue))
        time.sleep(0.005)
    gate.open.set()
    for t in threads:
        t.join(20)
    assert any(len(b) > 1 for b in gate.batches), gate.batches  # they were embedded together
    for text, got in zip(texts, out):
        assert got.shape == (1, embedder.dimension)
        np.testing.assert_allclose(got[0], embedder.embed_documents([text])[0], atol=1e-5)
    wrapped.close()
    after = wrapped.embed_documents(["still usable for documents after close"])  # a draining shutdown's last adds
    np.testing.assert_allclose(after, embedder.embed_documents(["still usable for documents after close"]), atol=1e-6)
