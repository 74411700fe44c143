"""Query-vector caches are per user (textual/cache_scope.py): one user's recent search never makes another
user's identical search faster (the timing side channel docs/scopes.md described)."""

from __future__ import annotations

import numpy as np

from memos_integrations.textual import cache_scope
from memos_integrations.textual.batching import BatchedEmbedder
from memos_integrations.textual.embed import _QueryCache


class Counting:
    """A 4-dimensional embedder that counts the texts it embeds."""

    name, dimension, fingerprint = "counting", 4, "counting-v1"

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return np.ones((len(texts), 4), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def test_the_minilm_query_cache_is_per_scope() -> None:
    cache, seen = _QueryCache(), []
    compute = lambda t: seen.append(t) or np.zeros(4, np.float32)  # noqa: E731
    for who in ("alice", "alice", "bob"):
        with cache_scope.scoped(who):
            cache.get("where is the tea?", compute)
    assert seen == ["where is the tea?"] * 2  # alice's repeat is cached; bob's first is not


def test_the_batched_query_cache_is_per_scope() -> None:
    inner = Counting()
    emb = BatchedEmbedder(inner, lambda texts: inner.embed_documents(texts))
    try:
        with cache_scope.scoped("alice"):
            emb.embed_query("tea")
            emb.embed_query("tea")
        assert inner.embedded == ["tea"]
        with cache_scope.scoped("bob"):
            emb.embed_query("tea")
        assert inner.embedded == ["tea", "tea"]
        emb.embed_query("tea")  # no scope (a library caller, one user): its own entry
        assert len(inner.embedded) == 3
    finally:
        emb.close()


def test_a_scope_ends_with_its_block() -> None:
    assert cache_scope.current() == ""
    with cache_scope.scoped("alice"):
        assert cache_scope.current() == "alice"
    assert cache_scope.current() == ""
