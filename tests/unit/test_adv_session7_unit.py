"""Adversary, session 7 (unit): per-user query-cache scopes across background threads."""

from __future__ import annotations

from typing import Any

from memos_integrations.activation.preload import Preloader
from memos_integrations.textual import cache_scope


class _Runtime:
    """Only what the preloader calls before it retrieves: a stand-in (a real model costs seconds here); it
    records the cache scope a prediction's retrieval runs under, then ends the prediction."""

    top_k = 4

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def pinned_memories(self, user_id: str | None) -> list[str]:
        return []

    def retrieve(self, query: str, user_id: str | None, **kw: Any) -> Any:
        self.scopes.append(cache_scope.current())
        raise LookupError("stop here: the scope is all this test reads")


def test_a_preloaded_prediction_embeds_its_query_in_the_requests_cache_scope() -> None:
    """The preloader's worker thread embedded predicted queries under the empty scope (a thread pool does not
    carry context variables), so one user's predicted query answered another's from the shared entry."""
    runtime = _Runtime()
    preloader = Preloader(runtime)
    try:
        with cache_scope.scoped("alice"):
            preloader.schedule("t1", "alice", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                               "model")
        preloader.wait(timeout=30)
    finally:
        preloader.close()
    assert runtime.scopes == ["alice"]


def test_the_async_readers_worker_reads_a_window_in_its_users_cache_scope(tmp_path: Any, embedder: Any,
                                                                          monkeypatch: Any) -> None:
    """A window read in the background (mode="async") caches its query vectors for the window's user, never
    under the shared empty scope where another user's background work would find them."""
    from memos_integrations import MemCube
    from memos_integrations.readers import LLMReader
    from memos_integrations.readers.engine import ReaderEngine
    from memos_integrations.textual import cache_scope
    from tests.unit.test_reader import RuleChat

    seen: list[str] = []
    read = ReaderEngine._read

    def spy(self: Any, job: Any, timeout: Any) -> Any:
        seen.append(cache_scope.current())
        return read(self, job, timeout)

    monkeypatch.setattr(ReaderEngine, "_read", spy)
    cube = MemCube.init_from_dir(tmp_path / "cube", embedder=embedder, reader=LLMReader.from_langchain(RuleChat()))
    try:
        cube.add(messages=[{"role": "user", "name": "Maya", "content": "I moved to Porto in May."}],
                 user_id="maya", session_id="s1", mode="async")
        assert cube.reader_engine.wait(timeout=30)
    finally:
        cube.close()
    assert seen and set(seen) == {"maya"}, seen
