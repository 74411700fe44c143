"""Upkeep of the parts of long texts, for :class:`~memos_integrations.textual.memory.TextualMemory`.

A message (or ``cube.add`` text) longer than ``max_text_chars`` is kept whole and indexed by parts:
``chunk`` items that name it in ``metadata["part_of"]`` (made by :func:`.limits.part_items`). This
module keeps the parts in step with their message: written with it (:func:`add_whole`), moved,
re-scoped or retired with it (:func:`parts_following`), found for a delete (:func:`parts_of`), and
collapsed into one hit per message in search (:func:`one_per_message`). The functions take the
memory they work on; ``TextualMemory`` keeps the public methods and owns the transactions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import OversizedInputError
from ..items import Edge, Kind, Lifecycle, MemoryItem, utcnow
from . import limits as L

if TYPE_CHECKING:
    from ..storage.sqlstore import SQLStore
    from .memory import TextualMemory

#: what a part copies from its message (besides tags and metadata), and follows when the message is updated
_PART_MIRRORS = ("user_id", "agent_id", "session_id", "event_time", "valid_from", "valid_to", "confidence", "state")


def add_whole(mem: TextualMemory, items: Sequence[MemoryItem], edges: Sequence[Edge] = ()) -> list[MemoryItem]:
    """See :meth:`TextualMemory.add_whole`."""
    check_whole_size(mem, [{"content": getattr(it, "text", None)} for it in items], "text")
    parts = [p for it in items if isinstance(it, MemoryItem) and isinstance(it.text, str)
             and len(it.text) > mem.max_text_chars for p in L.part_items(it, mem.part_chars)]
    ids = [it.id for it in items if isinstance(it, MemoryItem) and isinstance(it.id, str)]
    stale = set(parts_of(mem.store, ids)) - {p.id for p in parts}  # a new version with fewer parts
    stored = mem.add_items([*items, *parts], edges, max_chars=mem.max_message_chars)
    if stale:
        mem.delete(sorted(stale))
    return stored[: len(items)]


def check_whole_size(mem: TextualMemory, messages: Any, what: str = "message") -> None:
    """Refuse a message above ``max_message_chars`` (the hard limit, before anything is read or written)."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        return  # the reader names the type error
    for n, msg in enumerate(messages):
        text = msg.get("content") if isinstance(msg, Mapping) else None
        if isinstance(text, str) and len(text) > mem.max_message_chars:
            raise OversizedInputError(
                f"{what} {n} has {len(text)} characters, above this cube's hard limit of {mem.max_message_chars} "
                "(CubeConfig.max_message_chars); add it as a document in several pieces, or raise the limit"
            )


def parts_following(store: SQLStore, old: MemoryItem, new: MemoryItem) -> list[MemoryItem]:
    """New versions of the parts of a message that ``old`` -> ``new`` changes.

    A part is searched in its message's place, so it must say what the message says now: a new
    text (short, or the update was refused) leaves the parts nothing to index, so they are deleted;
    a new scope, state, time, tags or metadata is copied to them (else a message moved to another
    user, archived or deleted by ``update`` would still be found through its parts).
    """
    ids = parts_of(store, [old.id])
    if not ids:
        return []
    scope = (old.user_id, old.agent_id, old.session_id)
    # a real part always has its message's scope; a "part" written by someone else (any id can be
    # added) is never moved into the message's scope, nor deleted for it
    parts = [p for p in store.get_items(ids).values() if (p.user_id, p.agent_id, p.session_id) == scope]
    now = utcnow()
    if new.text != old.text:
        return [p.evolve(state=Lifecycle.DELETED, version=p.version + 1, updated_at=now) for p in parts]
    out = []
    for p in parts:
        own = {k: p.metadata[k] for k in (L.PART_OF, L.PART, L.PARTS, "start", "end") if k in p.metadata}
        fields = {name: getattr(new, name) for name in _PART_MIRRORS}
        fields.update(tags=list(new.tags), metadata={**new.metadata, **own})
        if any(getattr(p, name) != value for name, value in fields.items()):
            out.append(p.evolve(**fields, version=p.version + 1, updated_at=now, created_by=new.created_by))
    return out


def parts_of(store: SQLStore, ids: Sequence[str]) -> list[str]:
    """The live parts of the items ``ids``."""
    return [i for i, _ in store.children(ids, Kind.CHUNK, part_of=True)]


def holds_parts(mem: TextualMemory) -> bool:
    """Whether this cube holds parts of long texts (looked up once, then kept by ``add_items``)."""
    if mem._parts_seen is None:
        mem._parts_seen = mem.store.has_parts()
    return mem._parts_seen


def one_per_message(
    mem: TextualMemory, order: Sequence[int], rows: Callable[[Sequence[int]], dict[int, MemoryItem]],
    scores: dict[int, float], k: int,
) -> list[int]:
    """The first ``k`` of ``order`` that stand for different memories: a long message and its
    parts count once, at the best rank any of them reached, shown by its best-ranked part (a
    passage, not a 40k-character text) when one ranked at all."""
    kept: list[int] = []
    roots: set[str] = set()
    for start in range(0, len(order), 2 * k):
        window = order[start : start + 2 * k]
        items = rows(window)
        for rid in window:
            if rid not in items or (root := L.root_of(items[rid])) in roots:
                continue
            roots.add(root)
            if len(items[rid].text) > mem.max_text_chars:  # the whole long item ranked first
                parts = {rid for _, rid in mem.store.children([root], Kind.CHUNK, live=False)}
                best = next((r for r in order if r in parts), None)
                if best is not None and rows([best]):
                    scores[best] = max(scores[best], scores[rid])
                    rid = best
            kept.append(rid)
            if len(kept) == k:
                return kept
    return kept
