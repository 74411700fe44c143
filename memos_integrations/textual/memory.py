"""Plaintext memory (a cube's ``text_mem`` slot): writes, search and index upkeep.

Write path: validate -> embed (outside any transaction: a bad input or a failed embedder leaves the
cube untouched) -> one SQLite transaction (item, version, FTS row, vector, outbox row) -> the ANN
index -> clear the outbox. A crash after the commit leaves outbox rows, which :meth:`reconcile`
replays the next time the cube opens; the ANN index is never the only copy of anything.

Policy: synchronous. The faces' async methods run these in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from ..errors import InvalidInputError, InvalidTypeError, ItemNotFoundError
from ..items import (
    MAX_TOP_K,
    Edge,
    Kind,
    Lifecycle,
    MemoryItem,
    SearchHit,
    check_int,
    new_id,
    to_epoch,
    utcnow,
    validate_edge,
    validate_item,
)
from . import retrieve as R
from .embed import Embedder, check_finite
from .filters import MemoryFilter
from .graph import NEXT, GraphStore
from .read import FastReader, MemoryReader, check_text, parse_timestamp
from .store import SQLiteStore
from .vector import VectorIndex


class TextualMemory:
    """Items, search, versions and relations of one cube."""

    def __init__(
        self,
        store: SQLiteStore,
        index: VectorIndex,
        graph: GraphStore,
        embedder: Embedder,
        *,
        cube_id: str,
        max_text_chars: int = 32_000,
        exact_search_max: int = 4096,
        reader: MemoryReader | None = None,
    ) -> None:
        self.store, self.index, self.graph, self.embedder = store, index, graph, embedder
        self.cube_id = cube_id
        self.max_text_chars = max_text_chars
        self.exact_search_max = exact_search_max
        self.reader = reader or FastReader(max_text_chars)

    # -- writes -------------------------------------------------------------------------------
    def add_items(
        self, items: Sequence[MemoryItem], edges: Sequence[Edge] = (), vectors: np.ndarray | None = None
    ) -> list[MemoryItem]:
        """Store new items (or new versions of existing ids) atomically, with their embeddings.

        ``vectors`` (one row per item) are used as given when the caller already embedded the
        texts with this cube's embedder (LlamaIndex nodes carry theirs); otherwise texts are embedded.
        """
        if isinstance(items, MemoryItem) or not isinstance(items, Sequence):
            raise InvalidTypeError("add_items takes a list of MemoryItem")
        seen: set[str] = set()
        for item in items:
            if not isinstance(item, MemoryItem):
                raise InvalidTypeError(f"expected MemoryItem, got {type(item).__name__}")
            if not isinstance(item.id, str) or not item.id:
                raise InvalidTypeError(f"memory ids must be non-empty strings, got {item.id!r}")
            if item.id in seen:
                raise InvalidInputError(f"id {item.id!r} appears twice in one write; ids must be unique")
            seen.add(item.id)
            check_item(item, self.max_text_chars)
        if not items:
            return []
        existing = self.store.get_items([i.id for i in items], include_deleted=True)
        now = utcnow()
        stored: list[MemoryItem] = []
        for item in items:
            old = existing.get(item.id)
            changes: dict[str, Any] = {"cube_id": item.cube_id or self.cube_id, "updated_at": now}
            if old is not None:  # same id again: a new version, never an overwrite
                changes.update(version=old.version + 1, created_at=old.created_at)
                if item.state == Lifecycle.DELETED:
                    changes["state"] = Lifecycle.GENERATED
            stored.append(item.evolve(**changes))
        if vectors is None:
            vectors = self.embedder.embed_documents([i.embed_text for i in stored])
        else:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(stored):
                raise InvalidInputError(f"got {vectors.shape[0] if vectors.ndim else 0} vectors for {len(stored)} items")
            check_finite(vectors, "the vectors passed to add_items")
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self._check_dim(vectors)
        self.store.write_items(stored, vectors)
        if edges:
            self.graph.add_edges(edges)
        self._sync_after_commit()
        return stored

    def add_messages(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        timestamp: Any = None,
        principal: str | None = None,
        tags: Sequence[str] = (),
    ) -> list[MemoryItem]:
        """Read messages into items (one per message) and link consecutive turns of a session."""
        previous: list[MemoryItem] = []
        if session_id is not None:
            previous = self.store.list_items(
                MemoryFilter(session_id=session_id, user_id=user_id, kinds=[Kind.MESSAGE]), order="latest", limit=1
            )
        context = {
            "user_id": user_id, "agent_id": agent_id, "session_id": session_id, "cube_id": self.cube_id,
            "timestamp": timestamp, "principal": principal, "tags": list(tags),
            "previous_turns": [f"{p.metadata.get('speaker', 'user')}: {p.text}" for p in previous],
        }
        items = self.reader.read(messages, context=context)
        chain = [*previous, *items]
        edges = [Edge(a.id, b.id, NEXT) for a, b in zip(chain, chain[1:])]
        return self.add_items(items, edges)

    def update(self, item_id: str, *, principal: str | None = None, **changes: Any) -> MemoryItem:
        """Write a new version of ``item_id`` with ``changes`` (text, tags, metadata, state, ...)."""
        current = self.get(item_id)
        forbidden = {"id", "version", "created_at", "cube_id"} & set(changes)
        if forbidden:
            raise InvalidInputError(f"cannot change {sorted(forbidden)} of a memory; add a new memory instead")
        for key in ("event_time", "valid_from", "valid_to"):
            if key in changes:
                changes[key] = parse_timestamp(changes[key])
        try:
            if "state" in changes:
                changes["state"] = Lifecycle(changes["state"])
            if "kind" in changes:
                changes["kind"] = Kind(changes["kind"])
        except ValueError as exc:
            raise InvalidInputError(
                f"{exc}; kinds: {[k.value for k in Kind]}, states: {[s.value for s in Lifecycle]}"
            ) from None
        try:
            new = current.evolve(**changes, version=current.version + 1, updated_at=utcnow(),
                                 created_by=principal or current.created_by)
        except TypeError as exc:
            raise InvalidInputError(f"unknown field in update: {exc}") from None
        check_item(new, self.max_text_chars)
        reembed = new.embed_text != current.embed_text
        vectors = self.embedder.embed_documents([new.embed_text]) if reembed else None
        if vectors is not None:
            self._check_dim(vectors)
        self.store.write_items([new], vectors)
        self._sync_after_commit()
        return new

    def delete(self, ids: Sequence[str], *, principal: str | None = None) -> int:
        """Tombstone ``ids``: their versions stay in ``history``; search no longer returns them."""
        found = self.store.get_items(list(ids))
        now = utcnow()
        tombstones = [
            it.evolve(state=Lifecycle.DELETED, version=it.version + 1, updated_at=now, created_by=principal or it.created_by)
            for it in found.values()
        ]
        if tombstones:
            self.store.write_items(tombstones, None)
            self._sync_after_commit()
        return len(tombstones)

    # -- reads --------------------------------------------------------------------------------
    def get(self, item_id: str) -> MemoryItem:
        if not isinstance(item_id, str):
            raise InvalidTypeError(f"memory ids are strings, got {type(item_id).__name__}")
        found = self.store.get_items([item_id])
        if item_id not in found:
            raise ItemNotFoundError(f"no memory {item_id!r} in cube {self.cube_id!r} (deleted, or never added)")
        return found[item_id]

    def get_many(self, ids: Sequence[str]) -> list[MemoryItem]:
        found = self.store.get_items(list(ids))
        return [found[i] for i in ids if i in found]

    def list_items(self, flt: MemoryFilter | None = None, limit: int | None = None, offset: int = 0) -> list[MemoryItem]:
        return self.store.list_items(flt or MemoryFilter(), limit, offset)

    def history(self, item_id: str) -> list[MemoryItem]:
        if not isinstance(item_id, str):
            raise InvalidTypeError(f"memory ids are strings, got {type(item_id).__name__}")
        versions = self.store.history(item_id)
        if not versions:
            raise ItemNotFoundError(f"no memory {item_id!r} was ever in cube {self.cube_id!r}")
        return versions

    def search(
        self,
        query: str,
        flt: MemoryFilter | None = None,
        *,
        top_k: int = 10,
        plan: R.SearchPlan | str | None = None,
        now: datetime | None = None,
        query_vector: np.ndarray | None = None,
    ) -> list[SearchHit]:
        """Hybrid search; see :mod:`memos_integrations.textual.retrieve` for the plan.

        With ``query_vector`` (already embedded by the caller) ``query`` may be empty: dense only.
        """
        if query_vector is None or query:
            check_text(query, self.max_text_chars, "query")
        check_int(top_k, "top_k", 1, MAX_TOP_K)
        plan = R.plan_named(plan)
        flt = flt or MemoryFilter()
        pool = max(plan.candidates, top_k)
        scored: dict[str, list[tuple[int, float]]] = {}
        if plan.dense:
            qvec = self.embedder.embed_query(query) if query_vector is None else np.asarray(query_vector, np.float32)
            self._check_dim(qvec[None, :])
            scored["dense"] = self._dense(qvec, flt, pool)
        if plan.keyword and query and (terms := R.keyword_terms(query)):
            if self.store.max_rid() > plan.keyword_budget:  # small cubes never prune
                terms = R.prune_terms(self.store.term_counts(terms), plan.keyword_budget)
            scored["keyword"] = self.store.keyword_search(R.keyword_query(terms) or "", flt, pool)
        legs = {leg: [rid for rid, _ in hits] for leg, hits in scored.items()}
        weights = {"dense": plan.dense_weight, "keyword": plan.keyword_weight}
        scores = R.rrf(legs, weights, plan.rrf_k) if plan.fusion == "rrf" else R.convex(scored, weights)
        fetched: dict[int, MemoryItem] = {}  # rows read once per search, whichever step needs them first

        def rows(rids: Sequence[int]) -> dict[int, MemoryItem]:
            missing = [r for r in rids if r not in fetched]
            if missing:
                fetched.update(self.store.get_by_rid(missing))
            return {r: fetched[r] for r in rids if r in fetched}

        if plan.time_aware and scores:
            hint = R.time_hint(query, now)
            if hint.start is not None or hint.asks_when:
                items = rows(list(scores))
                times = {rid: (to_epoch(it.event_time), "refers_to" in it.metadata) for rid, it in items.items()}
                scores = R.apply_time(scores, hint, times, plan.time_boost)
        if plan.graph_hops and scores:
            scores = self._expand(scores, flt, plan, rows)
        order = sorted(scores, key=lambda r: -scores[r])
        if plan.mmr_lambda is not None and len(order) > 1:
            mmr_ids = order[: max(plan.mmr_pool, top_k)]  # MMR re-ranks; it must not cut top_k short
            rids, matrix = self.store.vectors_for(mmr_ids)
            order = R.mmr(mmr_ids, dict(zip(rids, matrix)), scores, plan.mmr_lambda, top_k)
        order = order[:top_k]
        items = rows(order)
        ranks = {leg: {rid: n for n, rid in enumerate(ranked, 1)} for leg, ranked in legs.items()}
        hits = [
            SearchHit(items[rid], scores[rid], {leg: r[rid] for leg, r in ranks.items() if rid in r})
            for rid in order if rid in items
        ]
        self.store.touch([h.item.id for h in hits])
        return hits

    def _dense(self, qvec: np.ndarray, flt: MemoryFilter, k: int) -> list[tuple[int, float]]:
        candidates = self.store.candidate_rids(flt, self.exact_search_max + 1)
        if len(candidates) <= self.exact_search_max:
            # few candidates: score them exactly from the vectors SQLite keeps (no ANN recall loss)
            return self._exact(qvec, candidates, k)
        # many candidates: ANN with the filter part Chroma understands, then the exact filter in SQL.
        # The lifecycle condition goes to SQL first: it matches nearly every indexed item (deleted ones
        # are not indexed), and Chroma's metadata pre-filter on it cost 25x the search itself (54 ms
        # against 2 ms at 10k items); only if that leaves too few hits does Chroma get it too.
        loose, strict = flt.chroma_where(states=False), flt.chroma_where()
        attempts = [(k * 3, loose), (k * 12, loose)] + ([(k * 12, strict)] if strict != loose else [])
        for fetch, where in attempts:
            found = self.index.query(qvec, fetch, where)
            allowed = self.store.rid_ids([i for i, _ in found], flt)
            hits = [(allowed[i], s) for i, s in found if i in allowed]
            if len(hits) >= k or len(found) < fetch:
                return hits[:k]
        # the filter is selective in ways Chroma cannot see (tags, metadata, time): never return
        # fewer than k because of it; score every candidate exactly, in chunks
        return self._exact(qvec, self.store.candidate_rids(flt, -1), k)

    def _exact(self, qvec: np.ndarray, candidates: Sequence[int], k: int) -> list[tuple[int, float]]:
        best: list[tuple[int, float]] = []
        for start in range(0, len(candidates), 50_000):
            rids, matrix = self.store.vectors_for(candidates[start : start + 50_000])
            if not rids:
                continue
            sims = matrix @ qvec
            top = np.argsort(-sims)[:k]
            best.extend((rids[i], float(sims[i])) for i in top)
        return sorted(best, key=lambda h: -h[1])[:k]

    def _expand(
        self, scores: dict[int, float], flt: MemoryFilter, plan: R.SearchPlan,
        rows: Callable[[Sequence[int]], dict[int, MemoryItem]],
    ) -> dict[int, float]:
        seeds = sorted(scores, key=lambda r: -scores[r])[: plan.graph_seeds]
        seed_items = rows(seeds)
        id_to_rid = {it.id: rid for rid, it in seed_items.items()}
        found = self.graph.neighbors(list(id_to_rid), plan.graph_hops, plan.graph_types)
        allowed = self.store.rid_ids(list(found), flt)  # neighbours obey the same filter (scope!)
        neighbours = {allowed[n]: (id_to_rid[seed], w) for n, (seed, _, w) in found.items() if n in allowed}
        return R.expand(scores, neighbours, plan.graph_weight)

    # -- relations ----------------------------------------------------------------------------
    def relate(self, src: str, dst: str, type: str, weight: float = 1.0, metadata: Mapping[str, Any] | None = None) -> Edge:
        if not isinstance(type, str) or not type.strip():
            raise InvalidInputError("a relation needs a non-empty type, e.g. 'mentions' or 'supports'")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise InvalidTypeError(f"a relation's weight is a number, got {weight!r}")
        validate_edge(Edge(src, dst, type, weight, dict(metadata or {})))  # NaN weight, surrogates, depth
        missing = {src, dst} - set(self.store.get_items([src, dst]))
        if missing:
            raise ItemNotFoundError(f"cannot relate: no memory {sorted(missing)} in cube {self.cube_id!r}")
        edge = Edge(src, dst, type, float(weight), dict(metadata or {}))
        self.graph.add_edges([edge])
        return edge

    def neighbors(self, item_id: str, depth: int = 1, types: Sequence[str] | None = None) -> list[MemoryItem]:
        found = self.graph.neighbors([item_id], depth, types)
        return self.get_many(list(found))

    # -- index upkeep -------------------------------------------------------------------------
    def _sync_after_commit(self) -> None:
        """Update the ANN index after a committed write; a failure is reported, never a lost memory."""
        try:
            self.sync_index()
        except Exception as exc:
            from ..errors import BackendError

            raise BackendError(
                f"the memory was stored in SQLite, but the vector index update failed ({exc}); it stays queued "
                "and is applied on the next write or when the cube opens (or run `memcube reindex`)"
            ) from exc

    def sync_index(self) -> int:
        """Apply queued index writes (the outbox); returns how many were applied."""
        pending = self.store.outbox()
        if not pending:
            return 0
        deletes = [i for i, op in pending if op == "delete"]
        upserts = [i for i, op in pending if op == "upsert"]
        rows = self.store.indexable(upserts)
        rid_list, matrix = self.store.vectors_for([rid for _, rid, _ in rows])
        by_rid = dict(zip(rid_list, matrix))
        missing = [(i, rid, m) for i, rid, m in rows if rid not in by_rid]
        if missing:  # a vector lost (older cube, manual edit): embed again from the source of truth
            texts = [it.embed_text for it in self.get_many([i for i, _, _ in missing])]
            for (_, rid, _), vec in zip(missing, self.embedder.embed_documents(texts)):
                by_rid[rid] = vec
        if rows:
            matrix = np.stack([by_rid[rid] for _, rid, _ in rows])
            self.index.upsert([i for i, _, _ in rows], matrix, [m for _, _, m in rows])
        self.index.delete(deletes)
        self.store.clear_outbox([i for i, _ in pending])
        return len(pending)

    def reconcile(self, full: bool = False) -> dict[str, int]:
        """Bring the ANN index in line with SQLite: replay the outbox; with ``full``, diff all ids."""
        replayed = self.sync_index()
        added = removed = 0
        if full:
            live = {i: (rid, m) for i, rid, m in self.store.indexable()}
            indexed = self.index.ids()
            orphans = sorted(indexed - set(live))
            missing = [i for i in live if i not in indexed]
            self.index.delete(orphans)
            if missing:
                with self.store.transaction() as c:
                    c.executemany("INSERT OR REPLACE INTO vector_outbox VALUES (?, 'upsert')", [(i,) for i in missing])
                self.sync_index()
            added, removed = len(missing), len(orphans)
        return {"replayed": replayed, "added": added, "removed": removed}

    def reindex(self, reembed: bool = False) -> int:
        """Rebuild the ANN index from SQLite (re-embedding every item with ``reembed``)."""
        self.index.reset()
        rows = self.store.indexable()
        if reembed:
            for start in range(0, len(rows), 512):
                chunk = rows[start : start + 512]
                items = self.get_many([i for i, _, _ in chunk])
                vectors = self.embedder.embed_documents([it.embed_text for it in items])
                self.store.write_items(items, vectors)  # same version: the vectors changed, not the memory
        with self.store.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO vector_outbox VALUES (?, 'upsert')", [(i,) for i, _, _ in rows])
        self.sync_index()
        return len(rows)

    def _check_dim(self, vectors: np.ndarray) -> None:
        from ..errors import EmbedderMismatchError

        if vectors.ndim != 2 or vectors.shape[1] != self.embedder.dimension:
            raise EmbedderMismatchError(
                f"the embedder returned {vectors.shape[-1]}-dim vectors but the cube uses {self.embedder.dimension}"
            )
        check_finite(vectors, self.embedder)


def new_item(text: str, **fields: Any) -> MemoryItem:
    """A ``MemoryItem`` from keyword fields, with times parsed and unknown fields named in the error."""
    for key in ("event_time", "valid_from", "valid_to"):
        if key in fields:
            fields[key] = parse_timestamp(fields[key])
    if "kind" in fields:
        try:
            fields["kind"] = Kind(fields["kind"])
        except ValueError:
            raise InvalidInputError(f"unknown kind {fields['kind']!r}; use one of {[k.value for k in Kind]}") from None
    fields.setdefault("id", new_id())
    try:
        return MemoryItem(text=text, **fields)
    except TypeError as exc:
        raise InvalidInputError(f"{exc}; see MemoryItem for the fields a memory has") from None


_OPTIONAL_STR = ("user_id", "agent_id", "session_id", "cube_id", "parent_id", "created_by", "method")


def check_item(item: MemoryItem, max_chars: int) -> None:
    """Reject an item whose fields would be stored as something else than they say (before any write)."""
    check_text(item.text, max_chars)
    for name in _OPTIONAL_STR:
        value = getattr(item, name)
        if value is not None and not isinstance(value, str):
            raise InvalidTypeError(f"{name} must be a string or None, got {type(value).__name__}")
    if not isinstance(item.context, str):
        raise InvalidTypeError(f"context must be a string, got {type(item.context).__name__}")
    for name in ("tags", "sources"):
        value = getattr(item, name)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise InvalidTypeError(f"{name} must be a list of strings, got {value!r}")
    if not isinstance(item.metadata, Mapping):
        raise InvalidTypeError(f"metadata must be a dict, got {type(item.metadata).__name__}")
    if item.confidence is not None and (isinstance(item.confidence, bool) or not isinstance(item.confidence, (int, float))):
        raise InvalidTypeError(f"confidence must be a number or None, got {item.confidence!r}")
    for name in ("created_at", "updated_at", "event_time", "valid_from", "valid_to"):
        value = getattr(item, name)
        if value is not None and not isinstance(value, datetime):
            raise InvalidTypeError(f"{name} must be a datetime or None, got {type(value).__name__}")
    try:
        Kind(item.kind)
        Lifecycle(item.state)
    except ValueError as exc:
        raise InvalidInputError(f"{exc}; kinds: {[k.value for k in Kind]}, states: {[s.value for s in Lifecycle]}") from None
    validate_item(item)  # values every read path can represent (times, UTF-8, JSON, numbers)


def ids_of(values: Iterable[Any]) -> list[str]:
    out = []
    for v in values:
        if not isinstance(v, str):
            raise InvalidTypeError(f"memory ids are strings, got {type(v).__name__}")
        out.append(v)
    return out
