"""The search front's per-user cap (server/search_front.py ``_PerUser``) under cancellation: a search cancelled
while its route runs (a client gone, where the server cancels the request's task; a graceful-shutdown timeout)
keeps its user's slot until its thread is free, so one user's cancelled searches never hold every thread."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("starlette")

from starlette.responses import Response  # noqa: E402

from memos_integrations.server.search_front import SearchFront  # noqa: E402


async def _who(headers: Any) -> Any:
    return SimpleNamespace(user_id=headers["user"])


async def _until(check: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_a_cancelled_search_keeps_its_users_slot_until_its_thread_is_free() -> None:
    running: list[str] = []
    release = threading.Event()

    def route(who: Any) -> Response:
        running.append(who.user_id)
        try:
            assert release.wait(10)
        finally:
            running.remove(who.user_id)
        return Response("ok")

    front = SearchFront(_who, None, threads=2)  # alice may hold one of the two threads
    try:
        first = asyncio.create_task(front.run({"user": "alice"}, route, {}, "q", None))
        await _until(lambda: running == ["alice"])
        first.cancel()  # her route keeps running in its thread: a thread cannot be interrupted
        await asyncio.sleep(0.05)
        again = asyncio.create_task(front.run({"user": "alice"}, route, {}, "q", None))
        await asyncio.sleep(0.1)
        assert running == ["alice"], "a cancelled search gave its slot back while its thread still ran"
        bob = asyncio.create_task(front.run({"user": "bob"}, route, {}, "q", None))
        await _until(lambda: "bob" in running)  # the second thread is bob's to use
        release.set()
        assert (await bob).status_code == 200 and (await again).status_code == 200
        with pytest.raises(asyncio.CancelledError):
            await first
        assert not front._per_user._held  # nothing kept per user once idle
    finally:
        release.set()
        front.close()


async def test_a_search_cancelled_before_its_thread_took_it_does_not_run() -> None:
    started: list[str] = []
    release = threading.Event()

    def route(who: Any) -> Response:
        started.append(who.user_id)
        assert release.wait(10)
        return Response("ok")

    front = SearchFront(_who, None, threads=1)  # one thread: bob's search queues behind alice's
    try:
        alice = asyncio.create_task(front.run({"user": "alice"}, route, {}, "q", None))
        await _until(lambda: started == ["alice"])
        bob = asyncio.create_task(front.run({"user": "bob"}, route, {}, "q", None))
        await asyncio.sleep(0.05)
        bob.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bob  # at once: it never reached a thread
        release.set()
        assert (await alice).status_code == 200
        assert started == ["alice"] and not front._per_user._held
    finally:
        release.set()
        front.close()
