"""adv6b: a revoked key and the search front. The documented window (Limits.key_cache_seconds, auth.Authenticator):
a key revoked in the database keeps working in a process until its cache entry is that old. A search authenticated
before the revoke but queued behind its user's own searches (search_front._PerUser: threads - 1 at once) is
answered whenever its turn comes, with no bound: after the revoke committed and past the window."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402

WINDOW = 0.3  # key_cache_seconds


@pytest.fixture
def world(tmp_path: Path, embedder: Any) -> Iterator[tuple[MOS, KeyStore, TestClient, str, dict[str, str]]]:
    mos = MOS(tmp_path / "home", embedder=embedder)
    keys = KeyStore.open(mos.home / "mos.db")
    mos.create_user("dana")
    mos.create_cube_for_user("dana-c", owner_id="dana")
    mos.add(memory_content="Dana keeps her bike in the hallway.", mem_cube_id="dana-c", user_id="dana")
    token, info = keys.create("dana")
    app = create_app(mos, keys=keys, limits=Limits(rate=0, key_cache_seconds=WINDOW), mcp=False, search_threads=2)
    try:
        with TestClient(app) as http:
            yield mos, keys, http, info.key_id, {"Authorization": f"Bearer {token}"}
    finally:
        keys.close()
        mos.close()


def test_a_search_queued_across_a_revoke_is_not_answered(world: tuple[MOS, KeyStore, TestClient, str, dict[str, str]]
                                                        ) -> None:
    mos, keys, http, key_id, auth = world
    assert http.get("/v1/memories/search", params={"q": "bike"}, headers=auth).status_code == 200
    store = mos._cube("dana-c").store
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # a long write on the cube (an import, the organiser): searches wait for it
        with store.transaction():
            held.set()
            release.wait(30)

    answers: dict[str, int] = {}

    def search(name: str) -> None:
        answers[name] = http.get("/v1/memories/search", params={"q": f"where is the bike {name}"},
                                 headers=auth).status_code

    writer = threading.Thread(target=hold)
    writer.start()
    assert held.wait(30)
    slots = http.app.state.searches._per_user._held  # type: ignore[attr-defined]  # user -> (semaphore, requests)

    def requests_of_dana(n: int) -> None:
        deadline = time.monotonic() + 30
        while (slots.get("dana") or (None, 0))[1] < n:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    first = threading.Thread(target=search, args=("first",))  # takes dana's one search slot, waits for the write
    first.start()
    requests_of_dana(1)
    queued = threading.Thread(target=search, args=("queued",))  # authenticated now, queued behind the first
    queued.start()
    requests_of_dana(2)
    assert keys.revoke(key_id)  # `memcube keys revoke` (another process): committed here
    revoked = time.monotonic()
    time.sleep(WINDOW * 3)
    assert http.get("/v1/memories/search", params={"q": "bike"}, headers=auth).status_code == 401  # the window held
    release.set()
    for t in (writer, first, queued):
        t.join(30)
    assert time.monotonic() - revoked > WINDOW
    assert answers["queued"] == 401, answers  # answered after the revoke and past the window: 200
