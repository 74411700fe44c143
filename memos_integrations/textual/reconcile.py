"""Apply one reconciliation decision (the LLM reader's, for one window) to plaintext memory, atomically.

ADD writes a new memory; UPDATE writes a new version of the same memory (the old text stays in its
history); SUPERSEDE closes the old memory's validity (``valid_to``), links it to its successor with a
``superseded_by`` edge and writes the successor (the old text is never lost: it stays searchable with
``as_of`` and in history); DELETE writes a tombstone; NOOP writes nothing. Each new version says who
(``created_by``, ``method``) and why (``metadata["op"]``, ``metadata["reason"]``).

Everything is embedded first (outside any transaction), then written in ONE transaction, inside
which ``on_commit`` runs too (the job queue marks the window done, the usage ledger counts it, the
audit log records it): a crash leaves either the whole decision or none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import MemosError
from ..items import Edge, Kind, Lifecycle, MemoryItem, utcnow
from . import index_sync as X

if TYPE_CHECKING:
    from .memory import TextualMemory

SUPERSEDED_BY = "superseded_by"
DERIVED_FROM = "derived_from"
SHARES_ENTITY = "shares_entity"


@dataclass
class Change:
    """One decided operation, in the cube's ids: what :func:`apply` writes."""

    op: str  # ADD | UPDATE | SUPERSEDE | DELETE | NOOP
    target: str | None = None  # the existing memory (UPDATE, SUPERSEDE, DELETE, NOOP)
    new: MemoryItem | None = None  # the memory to write (ADD, SUPERSEDE) or the new text's carrier (UPDATE)
    since: datetime | None = None  # SUPERSEDE: when the old memory stopped being true
    reason: str = ""


@dataclass
class Applied:
    items: list[MemoryItem] = field(default_factory=list)
    operations: list[tuple[Any, ...]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    usage: Any = None  # what reading the window cost (the reader's Usage), set by the caller


def apply(mem: TextualMemory, changes: Sequence[Change], *, principal: str | None,
          vectors: Mapping[str, np.ndarray] | None = None, on_commit: Callable[[Applied], None] | None = None) -> Applied:
    """Write ``changes`` in one transaction; ``vectors`` maps texts already embedded to their vectors.

    A target that is gone (deleted meanwhile) turns UPDATE / SUPERSEDE into ADD and drops DELETE /
    NOOP, recorded in ``Applied.refused``.
    """
    from .memory import check_item

    known = dict(vectors or {})
    texts = [c.new.embed_text for c in changes if c.new is not None and c.new.embed_text not in known]
    if texts:
        fresh = mem.embedder.embed_documents(texts)
        mem._check_dim(fresh)
        known.update(zip(texts, fresh))
    for c in changes:
        if c.new is not None:
            check_item(c.new, mem.max_text_chars)
    out = Applied()
    with mem.store.transaction():
        now = utcnow()
        targets = mem.store.get_items([c.target for c in changes if c.target])
        writes: list[tuple[MemoryItem, np.ndarray | None]] = []
        edges: list[Edge] = []
        for c in changes:
            old = targets.get(c.target) if c.target else None
            op = c.op
            if c.target and old is None:
                out.refused.append({"op": op, "target": c.target, "why": "the memory is gone (deleted meanwhile)"})
                if op not in ("UPDATE", "SUPERSEDE") or c.new is None:
                    continue
                op = "ADD"
            if op == "NOOP":
                out.operations.append(("NOOP", c.target))
            elif op == "ADD" and c.new is not None:
                item = c.new.evolve(cube_id=c.new.cube_id or mem.cube_id, updated_at=now)
                writes.append((item, known[item.embed_text]))
                out.items.append(item)
                out.operations.append(("ADD", item.id, item.text))
            elif op == "UPDATE" and old is not None and c.new is not None:
                meta = {**old.metadata, **{k: v for k, v in c.new.metadata.items() if k not in ("op", "reason")},
                        "op": "UPDATE", "reason": c.reason}
                item = old.evolve(text=c.new.text, version=old.version + 1, updated_at=now, created_by=principal or old.created_by,
                                  method=c.new.method, confidence=c.new.confidence, metadata=meta,
                                  sources=list(dict.fromkeys([*old.sources, *c.new.sources])))
                writes.append((item, known[item.embed_text] if item.embed_text != old.embed_text else None))
                targets[old.id] = item
                out.items.append(item)
                out.operations.append(("UPDATE", old.id, old.text, item.text))
            elif op == "SUPERSEDE" and old is not None and c.new is not None:
                new = c.new.evolve(cube_id=c.new.cube_id or mem.cube_id, updated_at=now,
                                   metadata={**c.new.metadata, "op": "SUPERSEDE", "supersedes": old.id, "reason": c.reason})
                until = c.since or new.valid_from or now
                closed = old.evolve(valid_to=until, version=old.version + 1, updated_at=now,
                                    created_by=principal or old.created_by,
                                    metadata={**old.metadata, "op": "SUPERSEDED", "superseded_by": new.id, "reason": c.reason})
                writes += [(closed, None), (new, known[new.embed_text])]
                edges.append(Edge(old.id, new.id, SUPERSEDED_BY, 1.0, {"at": until.isoformat(), "reason": c.reason}))
                out.items.append(new)
                out.operations.append(("SUPERSEDE", old.id, new.id))
            elif op == "DELETE" and old is not None:
                tomb = old.evolve(state=Lifecycle.DELETED, version=old.version + 1, updated_at=now,
                                  created_by=principal or old.created_by,
                                  metadata={**old.metadata, "op": "DELETE", "reason": c.reason})
                writes.append((tomb, None))
                out.operations.append(("DELETE", old.id))
        by_entity: dict[str, list[str]] = {}
        for item in out.items:
            for src in item.metadata.get("source_items") or []:
                edges.append(Edge(item.id, src, DERIVED_FROM))
            for name in item.metadata.get("entities") or []:
                if isinstance(name, str) and name.strip():
                    by_entity.setdefault(name.strip().lower(), []).append(item.id)
        for name, ids in by_entity.items():  # memories of one window about the same entity are linked
            edges += [Edge(a, b, SHARES_ENTITY, 1.0, {"entity": name}) for a, b in zip(ids, ids[1:]) if a != b]
        for item, vector in writes:
            mem.store.write_items([item], None if vector is None else np.asarray(vector, np.float32)[None, :])
        if edges:
            mem.store.add_edges(edges)
        if on_commit is not None:
            on_commit(out)
    X.sync_after_commit(mem)
    return out


def memory_item(text: str, kind: Kind, **fields: Any) -> MemoryItem:
    """A reader-written memory (validated where it is written, by :func:`apply`)."""
    try:
        return MemoryItem(text=text, kind=kind, **fields)
    except TypeError as exc:
        raise MemosError(f"cannot build a memory from the reader's output: {exc}") from None
