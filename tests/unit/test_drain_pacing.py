"""The background index drain (textual/index_defer.py) rests between drains: an embedded Chroma upsert
holds the GIL for its whole wall time, so cubes that fall due together must not drain back to back."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from memos_integrations.textual import index_defer as D
from memos_integrations.textual import index_sync


class _Mem:  # what the drainer keeps per memory: a weak key with a store path (named in warnings)
    def __init__(self, n: int) -> None:
        self.n = n


def test_cubes_due_together_drain_one_at_a_time_with_a_rest_between(monkeypatch: pytest.MonkeyPatch) -> None:
    drainer = D._Drainer()
    monkeypatch.setattr(D, "_drainer", drainer)
    spans: list[tuple[float, float]] = []
    done = threading.Event()
    mems = [_Mem(i) for i in range(5)]

    def sync_index(mem: Any) -> int:
        start = time.monotonic()
        time.sleep(0.03)  # an upsert holding the GIL (here: just its wall time)
        spans.append((start, time.monotonic()))
        if len(spans) == len(mems):
            done.set()
        return 1

    monkeypatch.setattr(index_sync, "sync_index", sync_index)
    monkeypatch.setattr(D, "MAX_AGE", 0.4)  # the drainer looks every 0.1 s
    old = time.monotonic() - D.MAX_AGE - 1
    for mem in mems:  # all due at once, as a service's cubes are after their first second
        drainer.states[mem] = D._State(queued=1, since=old)  # type: ignore[index]
    drainer.start()
    with drainer.wake:
        drainer.wake.notify()
    assert done.wait(10)
    assert all(state.queued == 0 and state.drained == 1 for state in drainer.states.values())
    for (s0, e0), (s1, _) in zip(spans, spans[1:]):
        assert s1 - e0 >= 0.9 * D.PACE * (e0 - s0), spans  # rested about twice the drain's wall time
    for state in drainer.states.values():
        state.closed = True  # the daemon thread finds nothing due from now on
