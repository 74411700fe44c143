"""A page's flagged-conflict notes, as the service answers them: one place for ``POST /v1/faces/conflicts`` and
the ``conflicts`` opt-in of the search routes (``POST /v1/memories/search``, ``POST /v1/faces/search``).

Why in the search answer: a face on a :class:`~memos_integrations.remote.RemoteCube` marks each hit it shows
with the memories it is flagged as contradicting (:func:`memos_integrations.organize.links.conflict_notes`);
asked separately, that is a second round trip and a second rate token per page. With ``"conflicts": true``
the search answers ``{"hits": [...], "conflicts": {id: [short texts]}}`` in one; without it the answer is
what it always was (no ``conflicts`` field).

Scope: the notes are computed on the cube view the search ran in (the acting user's), from the hits the
service itself just read, by :func:`~memos_integrations.organize.links.flagged_conflicts`, as
``/v1/faces/conflicts`` computes them from its own reads: a note is only ever the text of another live memory
of the same user as the hit (and of its agent or none), never of another user nor another agent's own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..errors import MemosError
from ..items import MemoryItem, SearchHit
from ..organize.links import flagged_conflicts
from .service import hit_json

log = logging.getLogger(__name__)

#: characters per note unless asked otherwise (the faces' default, ``conflict_notes(..., chars=80)``)
NOTE_CHARS = 80


def page_notes(view: Any, items: Sequence[MemoryItem], chars: int = NOTE_CHARS) -> dict[str, list[str]]:
    """item id -> the short texts of its flagged conflicts in ``view`` (ids without any left out)."""
    found = flagged_conflicts(view, items)
    return {i: [c.short(chars) for c in cs] for i, cs in found.items()}


def search_answer(view: Any, hits: Sequence[SearchHit], conflicts: bool = False) -> dict[str, Any]:
    """A search route's body: ``{"hits": [...]}``, and with ``conflicts`` the page's notes (:func:`page_notes`).

    A failed lookup leaves the field out (logged), so the search still answers and a client asks
    ``/v1/faces/conflicts`` as it would of an older service: a page never fails for want of its notes."""
    out: dict[str, Any] = {"hits": [hit_json(h) for h in hits]}
    if conflicts:
        try:
            out["conflicts"] = page_notes(view, [h.item for h in hits])
        except MemosError as exc:
            log.warning("conflict notes of a search page left out: %s", exc)
    return out
