"""Repeated refusals folded into counts, so probing cannot grow an audit log without bound.

:func:`.server.reach.guard` refuses a cube the caller cannot reach (REST and MCP); each refusal was one audit
row, one write transaction on ``mos.db``: a key probing cube ids at 50 requests a second wrote 4.3 million
rows a day. :class:`AuditFold` writes, per user and window (:attr:`AuditFold.WINDOW` seconds), the first
:attr:`~AuditFold.ROWS_PER_CUBE` refusals of each cube id and :attr:`~AuditFold.ROWS_PER_USER` in all, as
before; the rest are counted in memory and written as one row per (user, cube id) (action
``<action>.suppressed``, detail ``suppressed``) and one per user for the cube ids past its budget
(``suppressed_other_ids``) when the window is over. So the log still names every probing user and cube id up
to the budgets, and counts every refusal; a folded refusal costs no write.

When the counts reach the log: at the first guarded call after the window ends (any user's, any cube), and
when the sink's owner closes (:func:`flush_folds`: ``KeyStore.close``, ``MOS.close``). A process killed
meanwhile loses the counts of its last window (never the rows written, nor the first refusals of a user).
The same fold serves "another user's cube" and "no such cube": it never looks at whether the cube exists.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .access import AuditSink


class AuditFold:
    """Refusals of one audit sink, per window: written while under budget, counted after (module docstring)."""

    #: seconds per window: the longest a count waits for its row while refusals continue
    WINDOW = 60.0
    #: rows per (user, cube id) and window: a person's retries of a mistyped or unshared cube stay row by row
    ROWS_PER_CUBE = 10
    #: rows per user and window over all cube ids: an enumeration of ids is counted, not written id by id
    ROWS_PER_USER = 30
    #: (user, cube id) pairs and users counted per window; past it counts fold into one row without names
    MAX_TRACKED = 10_000

    def __init__(self, sink: AuditSink) -> None:
        try:  # held weakly when it is a method: the fold must not keep its owner (a KeyStore, a MOS) alive
            self._sink: Callable[[], AuditSink | None] = weakref.WeakMethod(sink)
        except TypeError:
            self._sink = lambda: sink
        self._lock = threading.Lock()
        self._window = self._now()
        self._cubes: dict[tuple[str, str], list[int]] = {}  # (user, cube) -> [rows written, refusals counted]
        self._users: dict[str, list[int]] = {}  # user -> [rows written, refusals of ids past its budget]
        self._untracked = 0  # refusals past MAX_TRACKED: counted without names
        self._said: dict[str, tuple[str, dict[str, Any]]] = {}  # user -> the action and detail its count rows repeat

    def _now(self) -> int:
        return int(time.monotonic() // self.WINDOW)

    def refuse(self, action: str, user: str, cube_id: str, detail: Mapping[str, Any]) -> None:
        """Write this refusal (``allowed=False``) while the budgets allow, else count it for the window's end."""
        self.flush()
        key = (user, cube_id)
        with self._lock:
            pair, who = self._cubes.get(key), self._users.get(user)
            if pair is None and (len(self._cubes) >= self.MAX_TRACKED or (who is None and len(self._users) >= self.MAX_TRACKED)):
                self._untracked += 1
                return
            if who is None:
                who = self._users[user] = [0, 0]
                self._said[user] = (action, dict(detail))
            if pair is not None and pair[0] >= self.ROWS_PER_CUBE:
                pair[1] += 1
                return
            if who[0] >= self.ROWS_PER_USER:
                if pair is None:
                    who[1] += 1  # an id past the user's budget: counted for the user, not tracked by name
                else:
                    pair[1] += 1
                return
            if pair is None:
                pair = self._cubes[key] = [0, 0]
            pair[0] += 1
            who[0] += 1
        self._write(action, user, cube_id, dict(detail))

    def flush(self, *, force: bool = False) -> None:
        """Write the counts of a window that is over (``force``: of the current one too) and start a new one."""
        now = self._now()
        if now == self._window and not force:  # the common case: one comparison, no lock
            return
        with self._lock:
            if now == self._window and not force:  # another thread flushed it first
                return
            cubes, users, untracked, said = self._cubes, self._users, self._untracked, self._said
            self._cubes, self._users, self._untracked, self._said, self._window = {}, {}, 0, {}, now
        for (user, cube_id), (_, counted) in cubes.items():
            if counted:
                action, detail = said[user]
                self._write(f"{action}.suppressed", user, cube_id, {**detail, "suppressed": counted})
        for user, (_, other) in users.items():
            if other:
                action, detail = said[user]
                self._write(f"{action}.suppressed", user, None, {**detail, "suppressed_other_ids": other})
        if untracked:
            self._write("refusals.suppressed", None, None, {"suppressed_untracked": untracked})

    def _write(self, action: str, user: str | None, target: str | None, detail: dict[str, Any]) -> None:
        sink = self._sink()
        if sink is not None:  # None: its owner is gone, and with it the log it wrote to
            sink(action, user, target, detail, allowed=False)


_FOLDS: weakref.WeakKeyDictionary[Any, AuditFold] = weakref.WeakKeyDictionary()
_FOLDS_LOCK = threading.Lock()


def _owner(sink: AuditSink) -> Any:
    """What a fold belongs to: the object of a bound method (``KeyStore.audit``, ``MOS._audit``), else the sink."""
    return getattr(sink, "__self__", sink)


def fold_for(sink: AuditSink) -> AuditFold:
    """The one fold of ``sink``'s owner in this process (made on first use)."""
    owner = _owner(sink)
    fold = _FOLDS.get(owner)
    if fold is None:
        with _FOLDS_LOCK:
            fold = _FOLDS.setdefault(owner, AuditFold(sink))
    return fold


def tick(sink: AuditSink) -> None:
    """Write a window's counts once it is over (every guarded call: a probe that stops is still counted)."""
    fold = _FOLDS.get(_owner(sink))
    if fold is not None:
        fold.flush()


def flush_folds(owner: Any) -> None:
    """Write every count ``owner``'s sink holds (its close calls this, before its database closes)."""
    fold = _FOLDS.pop(owner, None)
    if fold is not None:
        fold.flush(force=True)
