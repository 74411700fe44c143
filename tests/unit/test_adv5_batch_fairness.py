"""The shared query batches (textual/batching.py) are fair between users: one user's flood of queries no longer
queues every other user's search behind all of it (first come first served, 300 queued made another user's
query wait 0.5 s at 20 ms a call); with one user, or room to spare, batches are the queue in order as before."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from memos_integrations.textual import cache_scope
from memos_integrations.textual.batching import QueryBatcher


class Plugged:
    """``embed_many`` whose first call waits until ``opened`` (so texts queue up behind it)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered, self.opened = threading.Event(), threading.Event()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.opened.wait(10)
        return np.stack([np.full(4, len(t), np.float32) for t in texts])


async def _queue(batcher: QueryBatcher, who: str, texts: list[str]) -> list[asyncio.Task[np.ndarray]]:
    with cache_scope.scoped(who):  # each task copies the context: the request's user
        tasks = [asyncio.create_task(batcher.embed_async(t)) for t in texts]
    await asyncio.sleep(0)
    return tasks


async def test_a_users_flood_shares_the_next_batch_with_the_others() -> None:
    plugged = Plugged()
    batcher = QueryBatcher(plugged, max_batch=8)
    try:
        plug = await _queue(batcher, "zoe", ["plug"])
        assert await asyncio.to_thread(plugged.entered.wait, 5)
        flood = await _queue(batcher, "alice", [f"alice {i:02d}" for i in range(20)])
        bob = await _queue(batcher, "bob", ["bob"])
        plugged.opened.set()
        rows = await asyncio.wait_for(asyncio.gather(*plug, *flood, *bob), 5)
        assert [len(r) for r in rows] and rows[-1][0] == len("bob")  # each caller its own row
        assert "bob" in plugged.calls[1], plugged.calls  # the next call, not after alice's 20
        alice = [f"alice {i:02d}" for i in range(20)]
        assert sorted(plugged.calls[1]) == sorted([*alice[:7], "bob"])  # her share of it: her first seven
        assert sorted(sum(plugged.calls[2:], [])) == alice[7:]  # the rest of hers after, each once
    finally:
        plugged.opened.set()
        batcher.close()


async def test_one_users_queue_is_batched_in_order_as_before() -> None:
    plugged = Plugged()
    batcher = QueryBatcher(plugged, max_batch=8)
    try:
        plug = await _queue(batcher, "alice", ["plug"])
        assert await asyncio.to_thread(plugged.entered.wait, 5)
        texts = [f"t{i:02d}" for i in range(19)]
        queued = await _queue(batcher, "alice", texts)
        plugged.opened.set()
        await asyncio.wait_for(asyncio.gather(*plug, *queued), 5)
        assert plugged.calls[1:] == [texts[:8], texts[8:16], texts[16:]]
    finally:
        plugged.opened.set()
        batcher.close()
