"""Adversary checks (session 5) on the query batcher: each test failed on the code it was written against."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from memos_integrations.errors import BackendError
from memos_integrations.textual.batching import QueryBatcher


class _Fatal(BaseException):
    """What an embedder may raise that is no Exception (a SystemExit, a KeyboardInterrupt in the worker)."""


# -- item 1 (attack): a worker that died inside a call left its batch's callers waiting; once any other
# search started a new worker, they waited on that live one for ever (the check only asks "is a worker alive")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the worker's death
def test_callers_of_a_batch_whose_worker_died_fail_even_when_a_new_worker_runs() -> None:
    entered, release = threading.Event(), threading.Event()

    def embed_many(texts: list[str]) -> np.ndarray:
        if texts == ["doomed"]:
            entered.set()
            release.wait(5)
            raise _Fatal
        return np.ones((len(texts), 3), dtype=np.float32)

    batcher = QueryBatcher(embed_many)
    outcome: list[object] = []

    def doomed() -> None:
        try:
            outcome.append(batcher.embed("doomed"))
        except BackendError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=doomed, daemon=True)
    caller.start()
    assert entered.wait(5)
    release.set()  # the worker dies; the next search starts a new one, which the first caller must not wait on
    deadline = time.monotonic() + 5
    while batcher._thread is not None and batcher._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.embed("fine").shape == (3,)
    caller.join(4)
    try:
        assert not caller.is_alive(), "the first caller still waits for a worker that died"
        assert len(outcome) == 1 and isinstance(outcome[0], BackendError)
    finally:
        batcher.close()



# -- item 1 (attack): every search's query went through the one worker thread, so one user's huge query
# (1 MiB: about 1 s of tokenising on MiniLM) held every other user's search behind it; before batching
# each search embedded in its own request thread
def test_a_huge_query_does_not_hold_up_other_users_searches() -> None:
    from memos_integrations.textual.batching import BatchedEmbedder

    started, release = threading.Event(), threading.Event()

    class Slow:
        name, dimension, fingerprint = "slow", 3, "f"

        def embed_documents(self, texts: list[str]) -> np.ndarray:
            if any(len(t) > 100_000 for t in texts):
                started.set()
                release.wait(5)
            return np.ones((len(texts), 3), dtype=np.float32)

        def embed_query(self, text: str) -> np.ndarray:
            return self.embed_documents([text])[0]

    inner = Slow()
    shared = BatchedEmbedder(inner, inner.embed_documents)
    huge = threading.Thread(target=shared.embed_query, args=("x" * 1_000_000,), daemon=True)
    huge.start()
    try:
        assert started.wait(5)
        short = threading.Thread(target=shared.embed_query, args=("what does alice drink",), daemon=True)
        short.start()
        short.join(2)
        assert not short.is_alive(), "a short query waited for another caller's huge one"
    finally:
        release.set()
        huge.join(5)
        shared.close()
