"""Episodes: where a long session's parts begin and end, what they are called, how their text opens.

A session of at most ``episode_size`` memories is one episode, ``episode_id(user, session)``. A longer one
is cut into **parts** by its content, as backup and rsync chunkers cut files, walking its memories in
insertion order (the organiser's member order: ``created_at``, then id):

- a memory is a **cut** (its part ends after it) when the SHA-1 of its id hits a 1-in-``p`` condition and
  none of the ``m - 1`` memories before it hits, nor does it sit among the session's first ``m - 1``
  (``m, p = cut_spacing(episode_size)``: a quarter of it each, ``m`` at least 1, ``p`` at least 2);
- a stretch between two cuts longer than ``episode_size`` is split every ``episode_size`` memories from its
  start (the hard cap: a part never holds more).

Whether a memory is a cut depends on it and the ``m - 1`` memories before it only, never on where its part
began, so an edit moves at most the one cut within ``m`` memories after it (cuts are at least ``m`` apart):
deleting (or moving away, or moving in) one memory rewrites its own part and at most one neighbour, not
every later part as fixed offsets did; appending rewrites only the last part or starts a new one. The parts
are a function of the session's live members alone (same members, same parts: whatever edits, kills and
resumes led there). On a long session of random ids a part holds about 0.4 ``episode_size`` on average at
``episode_size`` 10 and 0.57 at 100 (tests/unit/test_parts9_cut_points.py pins it between 0.35 and 0.75).

Part 1 keeps the session's episode id; a later part is named after its first member
(``episode_id(user, session, first)``), never its ordinal, so a cut moving upstream renames nothing
downstream: the ordinal is ``metadata["part"]`` only (2, 3, ...), refreshed in place when it shifts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..items import from_epoch, to_epoch

if TYPE_CHECKING:
    from ..items import MemoryItem

#: characters of a session id an episode's text opens with (a longer id is cut: it is the episode's
#: ``session_id`` whole, and must not crowd out, or push past the text limit, what the episode says)
SESSION_CHARS = 64


def episode_id(user_id: str | None, session_id: str, first: str | None = None) -> str:
    """The id of a session's episode, or (``first``: the id of its first member) of a long session's later part."""
    key = hashlib.sha1(f"{user_id!r}\0{session_id}".encode("utf-8", "replace")).hexdigest()[:24]
    if first is None:
        return f"episode-{key}"
    return f"episode-{key}-from-{hashlib.sha1(first.encode('utf-8', 'replace')).hexdigest()[:16]}"


def cut_spacing(size: int) -> tuple[int, int]:
    """``(m, p)`` for parts of at most ``size``: cuts at least ``m`` memories apart, a memory's id hits 1 in ``p``."""
    return max(1, size // 4), max(2, size // 4)


def _hits(member_id: str, p: int) -> bool:
    return int.from_bytes(hashlib.sha1(member_id.encode("utf-8", "replace")).digest()[:8], "big") % p == 0


def session_parts(ids: Sequence[str], size: int) -> list[tuple[int, int]]:
    """The parts of a session whose members (in insertion order) have ``ids``: ``(start, end)`` slices."""
    if len(ids) <= size:
        return [(0, len(ids))]
    m, p = cut_spacing(size)
    parts: list[tuple[int, int]] = []
    start, last_hit = 0, -1  # the first part holds at least m too

    def stretch(end: int) -> None:
        parts.extend((k, min(k + size, end)) for k in range(start, end, size))

    for i, member in enumerate(ids):
        if _hits(member, p):
            if i - last_hit >= m:
                stretch(i + 1)
                start = i + 1
            last_hit = i
    if start < len(ids):
        stretch(len(ids))
    return parts


def episode_head(session_id: str, later_part: bool, group: Sequence[MemoryItem]) -> str:
    """``Session <id>[, continued] (<first day>[ to <last day>]): ``, what an episode's text opens with
    (no part number: a cut moving upstream renumbers a part without rewriting it)."""
    shown = session_id if len(session_id) <= SESSION_CHARS else session_id[: SESSION_CHARS - 1] + "…"
    head = f"Session {shown}" + (", continued" if later_part else "")
    when = [t for t in (to_epoch(g.event_time or g.created_at) for g in group) if t is not None]
    if when:
        first, last = from_epoch(min(when)), from_epoch(max(when))
        span = first.date().isoformat() if first and last and first.date() == last.date() else \
            f"{first.date().isoformat() if first else '?'} to {last.date().isoformat() if last else '?'}"
        head += f" ({span})"
    return head + ": "
