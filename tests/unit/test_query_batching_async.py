"""Query embeddings awaited on an event loop (textual/batching.py ``embed_async``, ``embed_query_async``) and
the vector handed to one request's route (textual/cache_scope.py ``given``): the server/search_front.py path.

Hostile cases: an embedding process that dies mid-batch (every awaiting caller gets its error, never a hang),
a caller that goes away while its text is embedded (the others still get theirs), a vector given for one
user, text or embedder never answering another."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from memos_integrations.errors import BackendError, MemosError
from memos_integrations.textual import cache_scope
from memos_integrations.textual.batching import BatchedEmbedder, QueryBatcher


def _row(text: str) -> np.ndarray:
    """A vector that depends on the text (so a wrong row is seen)."""
    rng = np.random.default_rng(abs(hash(text)) % 2**32)
    v = rng.standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


class Gated:
    """``embed_many`` whose calls wait for ``opened`` (so texts queue up behind the first call)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered, self.opened = threading.Event(), threading.Event()
        self.fail: BaseException | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.entered.set()
        assert self.opened.wait(10)
        if self.fail is not None:
            raise self.fail
        return np.stack([_row(t) for t in texts])


class Dead(BackendError):
    """What the embedding process raises when it died (``EmbedProcessError``): the whole call failed."""

    whole_batch = True


class Inner:
    name, dimension, fingerprint = "rows", 8, "rows-v1"

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return np.stack([_row(t) for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


@pytest.fixture
def emb() -> Iterator[BatchedEmbedder]:
    inner = Inner()
    e = BatchedEmbedder(inner, inner.embed_documents)
    yield e
    e.close()


async def _queued(batcher: QueryBatcher, n: int) -> None:
    for _ in range(1000):
        if len(batcher._queue) >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{len(batcher._queue)} texts queued, {n} expected")


async def test_an_awaited_query_is_the_bits_a_thread_gets_and_shares_its_batch() -> None:
    gated = Gated()
    batcher = QueryBatcher(gated)
    try:
        first = asyncio.create_task(batcher.embed_async("first"))
        assert await asyncio.to_thread(gated.entered.wait, 5)
        blocking: list[np.ndarray] = []
        thread = threading.Thread(target=lambda: blocking.append(batcher.embed("by a thread")))
        thread.start()
        awaited = [asyncio.create_task(batcher.embed_async(f"awaited {i}")) for i in range(3)]
        await _queued(batcher, 4)
        gated.opened.set()
        got = await asyncio.gather(first, *awaited)
        await asyncio.to_thread(thread.join, 5)
        assert [len(c) for c in gated.calls] == [1, 4]  # the loop's texts and the thread's in one call
        for text, vector in zip(["first", "awaited 0", "awaited 1", "awaited 2"], got, strict=True):
            np.testing.assert_array_equal(vector, _row(text))
        np.testing.assert_array_equal(blocking[0], _row("by a thread"))
    finally:
        gated.opened.set()
        batcher.close()


async def test_a_process_that_dies_mid_batch_fails_every_awaiting_caller_at_once_and_the_next_call_works() -> None:
    gated = Gated()
    batcher = QueryBatcher(gated)
    try:
        first = asyncio.create_task(batcher.embed_async("first"))
        assert await asyncio.to_thread(gated.entered.wait, 5)
        gated.fail = Dead("the embedding process died; retry the request")
        waiting = [asyncio.create_task(batcher.embed_async(f"w{i}")) for i in range(4)]
        await _queued(batcher, 4)
        gated.opened.set()
        got = await asyncio.wait_for(asyncio.gather(first, *waiting, return_exceptions=True), 5)
        assert all(isinstance(e, Dead) and isinstance(e, MemosError) for e in got), got
        assert [len(c) for c in gated.calls] == [1, 4]  # failed as one call: none retried alone
        gated.fail = None
        np.testing.assert_array_equal(await asyncio.wait_for(batcher.embed_async("after"), 5), _row("after"))
    finally:
        gated.opened.set()
        batcher.close()


async def test_a_caller_that_goes_away_while_embedded_or_queued_leaves_the_others_their_rows() -> None:
    gated = Gated()
    batcher = QueryBatcher(gated)
    try:
        in_call = asyncio.create_task(batcher.embed_async("in the call"))
        assert await asyncio.to_thread(gated.entered.wait, 5)
        queued = [asyncio.create_task(batcher.embed_async(f"q{i}")) for i in range(3)]
        await _queued(batcher, 3)
        in_call.cancel()  # its client disconnected while its text was being embedded
        queued[1].cancel()  # and another's while its text still waited
        await asyncio.sleep(0.01)
        assert [p.text for p in batcher._queue] == ["q0", "q2"]  # the queued one left the queue
        gated.opened.set()
        kept = await asyncio.wait_for(asyncio.gather(queued[0], queued[2]), 5)
        np.testing.assert_array_equal(kept[0], _row("q0"))
        np.testing.assert_array_equal(kept[1], _row("q2"))
        for task in (in_call, queued[1]):
            assert task.cancelled()
        np.testing.assert_array_equal(await batcher.embed_async("next"), _row("next"))
    finally:
        gated.opened.set()
        batcher.close()


async def test_closing_the_batcher_fails_awaiting_callers_and_refuses_new_ones() -> None:
    gated = Gated()
    batcher = QueryBatcher(gated)
    first = asyncio.create_task(batcher.embed_async("first"))
    assert await asyncio.to_thread(gated.entered.wait, 5)
    queued = asyncio.create_task(batcher.embed_async("queued"))
    await _queued(batcher, 1)
    closing = asyncio.create_task(asyncio.to_thread(batcher.close))
    with pytest.raises(BackendError, match="shutting down"):
        await asyncio.wait_for(queued, 5)
    gated.opened.set()
    await closing
    np.testing.assert_array_equal(await first, _row("first"))  # the call in flight finished
    with pytest.raises(BackendError, match="closed"):
        await batcher.embed_async("late")


async def test_awaited_query_vectors_are_cached_per_user(emb: BatchedEmbedder) -> None:
    inner = emb.inner
    for who in ("alice", "alice", "bob"):
        with cache_scope.scoped(who):
            np.testing.assert_array_equal(await emb.embed_query_async("tea?"), _row("tea?"))
    assert inner.embedded == ["tea?", "tea?"]  # alice once, bob once: alice's entry never answered bob
    with cache_scope.scoped("alice"):
        emb.embed_query("tea?")  # the route's own call: alice's cached entry
    assert emb.batcher.texts == 2 and len(inner.embedded) == 2


def test_a_given_vector_answers_only_its_embedder_user_and_text(emb: BatchedEmbedder) -> None:
    other = BatchedEmbedder(Inner(), Inner().embed_documents)
    planted = np.full(8, 0.5, np.float32)  # not the embedder's row for any text: seen if it leaks
    try:
        with cache_scope.scoped("alice"), cache_scope.given(emb, "tea?", planted):
            assert emb.embed_query("tea?") is planted
            in_thread: list[np.ndarray] = []
            ctx = contextvars.copy_context()  # what the route's worker thread gets
            t = threading.Thread(target=lambda: in_thread.append(ctx.run(emb.embed_query, "tea?")))
            t.start()
            t.join(5)
            assert in_thread[0] is planted
            bare: list[np.ndarray] = []  # a thread of another request (no copy of this context)
            t = threading.Thread(target=lambda: bare.append(emb.embed_query("tea?")))
            t.start()
            t.join(5)
            np.testing.assert_array_equal(bare[0], _row("tea?"))
            np.testing.assert_array_equal(emb.embed_query("tea"), _row("tea"))  # another text
            np.testing.assert_array_equal(other.embed_query("tea?"), _row("tea?"))  # another embedder
            with cache_scope.scoped("bob"):  # another user inside the block
                np.testing.assert_array_equal(emb.embed_query("tea?"), _row("tea?"))
        with cache_scope.scoped("alice"):
            assert cache_scope.given_query(emb, "tea?") is None  # gone with its block
            assert emb.embed_query("tea?") is not planted
    finally:
        other.close()
