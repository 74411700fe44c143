"""Adversary, session 6: the query-vector caches hand out the array they hold.

``embed_query`` is the embedders' public protocol; a caller that does arithmetic on the vector it got (in
place: ``v *= w``, ``v -= mean``) must not change what the next ``embed_query`` of that text, or the next
search by it, gets. Fresh embedders here (their own caches; the weights are shared): a test that poisons the
session embedder's cache would change later tests."""

from __future__ import annotations

import numpy as np

from memos_integrations.textual.batching import batched
from memos_integrations.textual.embed import MiniLMEmbedder

QUERY = "Who keeps bees on the roof?"


def _used_in_place(embedder: object) -> tuple[np.ndarray, np.ndarray]:
    first = embedder.embed_query(QUERY)  # type: ignore[attr-defined]
    expected = np.array(first, copy=True)
    if first.flags.writeable:  # a read-only vector would refuse the caller's change: as good as a copy
        first *= -1.0  # the caller's own arithmetic, on what it believes is its own vector
    return expected, embedder.embed_query(QUERY)  # type: ignore[attr-defined]


def test_a_callers_change_to_its_query_vector_never_reaches_the_minilm_cache(embedder: object) -> None:  # weights loaded
    expected, again = _used_in_place(MiniLMEmbedder())
    assert np.array_equal(again, expected)


def test_a_callers_change_to_its_query_vector_never_reaches_the_batched_cache(embedder: object) -> None:
    emb = batched(MiniLMEmbedder())
    try:
        expected, again = _used_in_place(emb)
        assert np.array_equal(again, expected)
    finally:
        emb.close()
