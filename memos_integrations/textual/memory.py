"""Plaintext memory (a cube's ``text_mem`` slot): writes, search and index upkeep.

Write path: validate -> embed (outside any transaction: a bad input or a failed embedder leaves the
cube untouched) -> one SQLite transaction (item, version, FTS row, vector, outbox row) -> the ANN
index -> clear the outbox. A crash after the commit leaves outbox rows, which :meth:`reconcile`
replays the next time the cube opens; the ANN index is never the only copy of anything.

Concurrency: version numbers are read and assigned inside the write transaction (``BEGIN IMMEDIATE``),
so concurrent writers of one memory queue up and each gets a version of its own; ``update`` can also
compare-and-set (``expected_version``). Draining the outbox into the index is serialised by an
:class:`~memos_integrations.cubelock.IndexWriteLock` (threads and processes). A write that committed
never raises because the index could not be updated afterwards: its outbox rows stay queued, a
warning is logged, and the next write, ``reconcile`` or open applies them. Search re-reads its final
hits under the filter, so a memory deleted (or moved out of scope) meanwhile is not returned.

Parts of long texts are kept in step by :mod:`.parts`; the outbox drain, ``reconcile`` and
``reindex`` live in :mod:`.index_sync`. This class keeps the public methods of both.

Policy: synchronous. The faces' async methods run these in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any

import numpy as np

from ..cubelock import INDEX_LOCK_FILE, IndexWriteLock
from ..errors import (
    ConflictError,
    InvalidInputError,
    InvalidTypeError,
    ItemNotFoundError,
)
from ..items import (
    MAX_TOP_K,
    Edge,
    Kind,
    Lifecycle,
    MemoryItem,
    SearchHit,
    check_int,
    check_utf8,
    utcnow,
    validate_edge,
)
from ..organize import partitions as W
from ..storage.base import GraphStore, VectorIndex
from ..storage.graph import NEXT
from ..storage.organize_state import without_stale_summaries
from ..storage.sqlstore import SQLStore
from . import dense as D
from . import embed_ahead as EA
from . import expand as E
from . import fusion_learned as FL
from . import index_sync as X
from . import late as LT
from . import limits as L
from . import parts as P
from . import retrieve as R
from . import shape as S
from . import speaker_legs as K
from .embed import VECTOR_TEXT_META, VECTOR_TEXT_VERSION, Embedder, check_finite, embed_views, item_vectors
from .filters import MemoryFilter
from .item_checks import _normalised_changes, check_item
from .item_checks import ids_of as ids_of  # re-exported: the historical import path
from .item_checks import new_item as new_item  # re-exported: the historical import path
from .read import FastReader, MemoryReader

_log = logging.getLogger(__name__)
_REBASES = 50  # an update re-embeds and retries at most this often when others keep changing the text


class TextualMemory:
    """Items, search, versions and relations of one cube."""

    def __init__(
        self,
        store: SQLStore,
        index: VectorIndex,
        graph: GraphStore,
        embedder: Embedder,
        *,
        cube_id: str,
        max_text_chars: int = 32_000,
        exact_search_max: int = 4096,
        reader: MemoryReader | None = None,
        write_lock: IndexWriteLock | None = None,
        max_message_chars: int = 1_000_000,
        part_chars: int = 700,
        query_chars: int = 2_000,
    ) -> None:
        self.store, self.index, self.graph, self.embedder = store, index, graph, embedder
        # one drain of the outbox at a time, across threads and processes sharing this database
        self.write_lock = write_lock or IndexWriteLock(store.path.with_name(INDEX_LOCK_FILE))
        self.cube_id = cube_id
        self.max_text_chars = max_text_chars
        # messages and cube.add texts: kept whole up to this, indexed by parts above max_text_chars
        self.max_message_chars = max(max_text_chars, max_message_chars)
        self.part_chars, self.query_chars = part_chars, query_chars
        self._parts_seen: bool | None = None
        self.exact_search_max = exact_search_max
        self.reader = reader or FastReader(self.max_message_chars)
        self._check_vector_version()

    def _check_vector_version(self) -> None:
        """Record what this cube's vectors mean (:data:`.embed.VECTOR_TEXT_VERSION`) when it is new;
        say how to bring an older cube's vectors up to date (they keep working meanwhile)."""
        version = self.store.get_meta(VECTOR_TEXT_META)
        if version == VECTOR_TEXT_VERSION:
            return
        if self.store.max_rid() == 0:
            self.store.set_meta(VECTOR_TEXT_META, VECTOR_TEXT_VERSION)
            return
        _log.warning(
            "cube %s holds vectors of index-text version %s (this release embeds messages as version %s: own words "
            "averaged with the previous turn's own words, better dense recall); its search works as before. Run "
            "`memcube reindex --reembed` (MemCube.reindex(reembed=True)) once to re-embed it",
            self.cube_id, version or "1", VECTOR_TEXT_VERSION,
        )

    # -- writes -------------------------------------------------------------------------------
    def add_items(
        self, items: Sequence[MemoryItem], edges: Sequence[Edge] = (), vectors: np.ndarray | None = None,
        *, max_chars: int | None = None,
    ) -> list[MemoryItem]:
        """Store new items (or new versions of existing ids) atomically, with their embeddings.

        ``vectors`` (one row per item) are used as given when the caller already embedded the
        texts with this cube's embedder (LlamaIndex nodes carry theirs); otherwise texts are embedded.
        ``max_chars`` (default ``max_text_chars``) is the per-item text limit of this write; use
        :meth:`add_whole` to store longer texts with the parts that index them.
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
            check_item(item, max_chars or self.max_text_chars)
        if not items:
            return []
        if vectors is None:
            vectors = item_vectors(self.embedder, items)
        else:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(items):
                raise InvalidInputError(f"got {vectors.shape[0] if vectors.ndim else 0} vectors for {len(items)} items")
            check_finite(vectors, "the vectors passed to add_items")
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self._check_dim(vectors)
        with self.store.transaction():  # versions of existing ids are read where they are written
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
            stored = W.admit(self.store, self.cube_id, stored)  # born in its session's working memory
            self.store.write_items(stored, vectors)
        if edges:
            self.graph.add_edges(edges)
        if any(i.kind == Kind.CHUNK and L.PART_OF in i.metadata for i in stored):
            self._parts_seen = True  # written here, by add_whole or by a merge
        X.sync_after_commit(self)
        W.keep_working(self, stored)  # what no longer fits is demoted (a crash here: the next run does it)
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
        P.check_whole_size(self, messages)
        items = self.reader.read(messages, context=context)
        chain = [*previous, *items]
        edges = [Edge(a.id, b.id, NEXT) for a, b in zip(chain, chain[1:])]
        return self.add_whole(items, edges)

    def add_whole(self, items: Sequence[MemoryItem], edges: Sequence[Edge] = ()) -> list[MemoryItem]:
        """Store texts of up to ``max_message_chars`` whole; one longer than ``max_text_chars`` is also
        indexed as parts (``chunk`` items, see :mod:`.parts`) written in the same transaction.

        Returns the items as stored, without their parts.
        """
        return P.add_whole(self, items, edges)

    def update(
        self, item_id: str, *, principal: str | None = None, expected_version: int | None = None, **changes: Any
    ) -> MemoryItem:
        """Write a new version of ``item_id`` with ``changes`` (text, tags, metadata, state, ...).

        The version number is taken inside the write transaction, so concurrent updates (threads, or
        processes sharing the database) queue up and each gets a version of its own; none overwrites
        another. Without ``expected_version`` the changes apply to the version that is current when the
        write runs (fields not in ``changes`` keep what another writer stored meanwhile).

        Args:
            item_id: the memory to change.
            principal: who changes it (recorded as ``created_by`` of the new version).
            expected_version: compare-and-set: write only if the stored version is still this one.
            **changes: fields of :class:`MemoryItem` to set.

        Returns:
            The new version, as stored.

        Raises:
            ItemNotFoundError: no live memory ``item_id`` (never added, or deleted meanwhile).
            ConflictError: the stored version is not ``expected_version``; re-read the memory and retry.
            InvalidInputError: a field that cannot be changed, or a value that cannot be stored.
        """
        if expected_version is not None and (isinstance(expected_version, bool) or not isinstance(expected_version, int)):
            raise InvalidTypeError(f"expected_version is the integer version you read, got {expected_version!r}")
        if expected_version is not None:  # 0 or -1 can never match: a caller's bug, not a retryable conflict
            check_int(expected_version, "expected_version (the version you read)", 1)
        changes = _normalised_changes(changes)
        embedded: dict[str, np.ndarray] = {}  # embedded views -> vector, kept across attempts
        for _ in range(_REBASES):
            base = self.get(item_id)
            self._check_expected(base, expected_version)
            new = self._evolve(base, changes, principal)
            if _views(new) != _views(base) and _views(new) not in embedded:
                vectors = item_vectors(self.embedder, [new])  # never inside the write lock
                self._check_dim(vectors)
                embedded[_views(new)] = vectors[0]
            with self.store.transaction():
                current = self.store.get_items([item_id]).get(item_id)
                if current is None:
                    raise ItemNotFoundError(f"memory {item_id!r} was deleted while it was being updated; add it again")
                self._check_expected(current, expected_version)
                if current.version != base.version:  # another writer committed since we read: rebase onto it
                    new = self._evolve(current, changes, principal)
                    if _views(new) != _views(current) and _views(new) not in embedded:
                        continue  # the rebased text needs an embedding: leave the lock, embed, retry
                vector = embedded.get(_views(new)) if _views(new) != _views(current) else None
                self.store.write_items([new], None if vector is None else vector[None, :])
                follow = P.parts_following(self.store, current, new)
                if follow:  # same transaction: a message and its parts never disagree
                    self.store.write_items(follow, None)
            X.sync_after_commit(self)
            return new
        raise ConflictError(
            f"memory {item_id!r} changed {_REBASES} times while this update was being prepared; "
            "re-read it and retry (or serialise writers of this memory)"
        )

    def _check_expected(self, item: MemoryItem, expected: int | None) -> None:
        if expected is not None and item.version != expected:
            raise ConflictError(
                f"memory {item.id!r} is at version {item.version}, not the expected {expected}: another writer "
                "changed it first; re-read it (get / history) and retry your change on the new version"
            )

    def _evolve(self, base: MemoryItem, changes: Mapping[str, Any], principal: str | None) -> MemoryItem:
        try:
            new = base.evolve(**changes, version=base.version + 1, updated_at=utcnow(),
                              created_by=principal or base.created_by)
        except TypeError as exc:
            raise InvalidInputError(f"unknown field in update: {exc}") from None
        # an unchanged long text (a message kept whole, see .limits) is not length-checked again
        check_item(new, self.max_text_chars if new.text != base.text else max(self.max_text_chars, len(new.text)))
        return new

    def delete(self, ids: Sequence[str], *, principal: str | None = None) -> int:
        """Tombstone ``ids``: their versions stay in ``history``; search no longer returns them.

        A message's parts (see :mod:`.limits`) go with it. The tombstone's version is taken inside the
        write transaction (see :meth:`update`); an id already deleted, or never added, is skipped.
        Returns how many of the memories asked for were deleted.
        """
        asked = set(ids)
        with self.store.transaction():
            found = self.store.get_items([*ids, *self._parts_of(list(ids))])
            now = utcnow()
            tombstones = [
                it.evolve(state=Lifecycle.DELETED, version=it.version + 1, updated_at=now,
                          created_by=principal or it.created_by)
                for it in found.values()
            ]
            if tombstones:
                self.store.write_items(tombstones, None)
        if tombstones:
            X.sync_after_commit(self)
        return sum(t.id in asked for t in tombstones)

    def _parts_of(self, ids: Sequence[str]) -> list[str]:
        """The live parts (see :mod:`.parts`) of the items ``ids``."""
        return P.parts_of(self.store, ids)

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
        session: str | None = None,
    ) -> list[SearchHit]:
        """Hybrid search; see :mod:`memos_integrations.textual.retrieve` for the plan.

        ``session`` is the conversation the query comes from: a plan with ``working_first`` puts the
        best hits of that session's working memory first (it is not a filter; ``flt`` is).

        With ``query_vector`` (already embedded by the caller) ``query`` may be empty: dense only.
        An empty or whitespace query without a vector asks for nothing and finds nothing (``[]``).
        A query longer than ``query_chars`` is searched as its last part and its rarest words
        (:func:`.limits.reduce_query`); queries have no length limit. A message indexed by parts
        is returned once: as its best part (``metadata["part_of"]`` names the message) or whole.
        """
        if not isinstance(query, str):
            raise InvalidTypeError(f"query must be a string, got {type(query).__name__}")
        check_utf8(query, "query")
        check_int(top_k, "top_k", 1, MAX_TOP_K)
        if query_vector is not None:
            query_vector = self._query_vector(query_vector)
        if not query.strip():
            if query_vector is None:
                return []
            query = ""
        plan = R.plan_named(plan)
        flt = flt or MemoryFilter()
        parts = P.holds_parts(self)
        pool = max(plan.candidates, top_k) * (3 if parts else 1)
        dense_text, time_text, terms, counts = query, query, R.keyword_terms(query), None
        if len(query) > self.query_chars:  # chat-sized: a pasted log, a whole document
            budget = min(self.query_chars, L.DENSE_CHARS)
            counts = self.store.term_counts(L.candidate_terms(query, budget))
            reduced = L.reduce_query(query, counts, budget)
            dense_text, time_text, terms = reduced.text, L.tail(query, budget), reduced.terms
        if plan.keyword and terms and self.store.max_rid() > plan.keyword_budget:  # small cubes never prune
            terms = R.prune_terms(
                {t: counts[t] for t in terms} if counts else self.store.term_counts(terms), plan.keyword_budget
            )
        qvec, ahead = None, dict[str, np.ndarray]()
        if plan.dense:  # with the text the plan embeds next, in one pass where it can (.embed_ahead)
            with LT.query_pass(self.embedder) if plan.fusion == "late" else nullcontext():  # its token vectors too
                qvec, ahead = EA.query_vector(self, plan, dense_text, flt) if query_vector is None else (query_vector, {})
            self._check_dim(qvec[None, :])
        fetched: dict[int, MemoryItem] = {}  # rows read once per search, whichever step needs them first

        def rows(rids: Sequence[int]) -> dict[int, MemoryItem]:
            missing = [r for r in rids if r not in fetched]
            if missing:
                fetched.update(self.store.ranking_rows(missing))  # shared, read-only: hits are re-read below
            return {r: fetched[r] for r in rids if r in fetched}

        while True:
            scored: dict[str, list[tuple[int, float]]] = {}
            if qvec is not None:
                scored["dense"] = self._dense(qvec, flt, pool)
            if plan.keyword and terms:
                scored["keyword"] = K.keyword_leg(self, plan, dense_text, terms, flt, pool, scored)
            scored.update(S.extra_legs(self, plan, query, qvec, flt, pool, session))
            scored.update(E.expansion_legs(self, plan, dense_text, qvec, terms, flt, pool, scored, ahead))
            scored.update(K.speaker_legs(self, plan, dense_text, qvec, terms, flt, pool, scored))
            legs = {leg: [rid for rid, _ in hits] for leg, hits in scored.items()}
            via: dict[int, int] = {}
            order, scores = self._ranked(scored, legs, plan, flt, rows, (query, time_text, qvec, via, dense_text), now, top_k)
            # one long message's parts can fill every leg's pool and collapse to one hit: widen the
            # pools until top_k distinct memories are found or the legs have nothing more to give
            full = any(len(hits) >= pool for hits in scored.values())
            if not parts or len(order) >= top_k or not full or pool >= self.store.max_rid():
                break
            pool *= 4
        # re-read under the filter: a hit deleted, archived or moved out of scope since it was scored
        # (another thread or process) is dropped, never returned; so is a summary whose sources changed
        items = without_stale_summaries(self.store, self.store.get_by_rid(order, flt))
        ranks = {leg: {rid: n for n, rid in enumerate(ranked, 1)} for leg, ranked in legs.items()}
        hits = [
            SearchHit(items[rid], scores[rid], {leg: r[rid] for leg, r in ranks.items() if rid in r}
                      | ({"via_summary": via[rid]} if rid in via else {}))
            for rid in order
            if rid in items and not (plan.summary_hits == "expand" and items[rid].kind == Kind.SUMMARY)
        ]
        # a part's message is used when its part is: the scheduler must not archive a message (and,
        # through update, its parts) that searches keep finding by its parts
        self.store.touch(list(dict.fromkeys(i for h in hits for i in (h.item.id, L.root_of(h.item)))))
        return hits

    def _ranked(
        self, scored: dict[str, list[tuple[int, float]]], legs: dict[str, list[int]], plan: R.SearchPlan,
        flt: MemoryFilter, rows: Callable[[Sequence[int]], dict[int, MemoryItem]],
        query: tuple[str, str, np.ndarray | None, dict[int, int], str], now: datetime | None, top_k: int,
    ) -> tuple[list[int], dict[int, float]]:
        """Fuse the legs, apply time, graph, relation hops, summary expansion, MMR and working memory
        first, and keep the first ``top_k`` distinct memories.

        ``query`` is (the query, its time text, its vector, the summary annotations to fill in, the text it embedded).

        Returns:
            The ranked row ids and every scored row's score.
        """
        text, time_text, qvec, via, dense_text = query
        weights = {"dense": plan.dense_weight, "keyword": plan.keyword_weight, "summary": plan.coarse_weight,
                   "entity": plan.entity_weight, "working": plan.dense_weight,
                   "person_topic": plan.person_topic_weight, **E.leg_weights(plan), **K.leg_weights(plan)}
        scores = R.convex(scored, weights) if plan.fusion == "convex" else R.rrf(legs, weights, plan.rrf_k)
        if plan.time_aware and scores:
            hint = R.time_hint(time_text, now)
            if hint.start is not None or hint.asks_when:
                scores = R.apply_time(scores, hint, S.event_times(self, list(scores), rows), plan.time_boost)
        if plan.graph_hops and scores:
            scores = self._expand(scores, flt, plan, rows)
        if plan.relation_hops and scores:
            scores = S.relation_hops(self, scores, flt, plan, rows, text)
        if plan.speaker_boost and scores:  # after the hops: a neighbour said by someone else is not boosted
            scores = S.speaker_focus(self, scores, plan, rows, text)
        order = sorted(scores, key=lambda r: -scores[r])
        if plan.summary_hits == "expand" and order:
            order, found = S.expand_summary_hits(self, order, scores, flt, plan, rows, qvec, max(plan.mmr_pool, 3 * top_k))
            via.update(found)
        if plan.mmr_lambda is not None and len(order) > 1:
            window = max(plan.mmr_pool, top_k)  # MMR re-ranks; it must not cut top_k short
            if P.holds_parts(self):  # MMR chooses among memories, not among the parts of one
                order = P.one_per_message(self, order, rows, scores, window)
            mmr_ids = order[:window]
            rids, matrix = self.store.vectors_for(mmr_ids)
            chosen = R.mmr(mmr_ids, dict(zip(rids, matrix)), scores, plan.mmr_lambda, top_k)
            # the rest follow in score order: the session cap and working memory first choose among them too
            picked = set(chosen)
            order = chosen + [r for r in order if r not in picked]
        order = K.final_order(order, scores, rows, plan, text, legs, max(plan.mmr_pool, 3 * top_k))
        if plan.fusion in ("learned", "late"):  # the plan's candidates re-scored by fitted weights
            late = LT.scorer(self, dense_text) if plan.fusion == "late" else None  # None: as learned
            order = FL.rescore(text, order, scores, scored, rows, plan, late=late)
        return P.one_per_message(self, order, rows, scores, top_k), scores

    def _query_vector(self, value: Any) -> np.ndarray:
        """A caller's query vector as one finite float32 row of this cube's dimension, else a MemosError."""
        dim = self.embedder.dimension
        try:
            with np.errstate(over="ignore"):  # a number beyond float32 becomes inf, refused below
                vec = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidTypeError(f"query_vector must be a list of {dim} numbers, got {type(value).__name__}") from None
        if vec.ndim != 1:
            raise InvalidInputError(f"query_vector must be one vector of {dim} numbers, got shape {vec.shape}")
        if vec.shape != (dim,):  # made by another embedder
            from ..errors import EmbedderMismatchError

            raise EmbedderMismatchError(
                f"query_vector has {vec.shape[0]} numbers but this cube's embedder makes {dim}-dim vectors; "
                "embed the query with the cube's embedder")
        if not np.isfinite(vec).all():  # NaN, infinity, or a number beyond float32
            raise InvalidInputError("query_vector holds NaN or infinite values; pass finite numbers (an embedding)")
        return vec

    def _dense(self, qvec: np.ndarray, flt: MemoryFilter, k: int) -> list[tuple[int, float]]:
        return D.dense(self, qvec, flt, k)  # candidates and their vectors held between searches (.dense)

    def _exact(self, qvec: np.ndarray, candidates: Sequence[int], k: int) -> list[tuple[int, float]]:
        return D.exact(self, qvec, candidates, k)

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

    # -- index upkeep (see :mod:`.index_sync`) ------------------------------------------------
    def sync_index(self) -> int:
        """Apply queued index writes (the outbox); returns how many were applied.

        One drain at a time (:attr:`write_lock`). The outbox is read before the items, so the index
        receives each item's state as of now, never older than what was queued; an item that is not
        live any more is deleted from the index whatever the queued op said. Only the rows read are
        cleared: a write that commits during the drain keeps its row for the next one.
        """
        return X.sync_index(self)

    def reconcile(self, full: bool = False) -> dict[str, int]:
        """Bring the ANN index in line with SQLite: replay the outbox; with ``full``, diff all ids.

        ``full`` lists every id in the index (paged) and every live id in SQLite: vectors of deleted or
        unknown items are removed, live items without one are added (ids queued by writes that commit
        meanwhile are left to their own drain). Drains wait meanwhile.
        """
        return X.reconcile(self, full)

    def reindex(self, reembed: bool = False) -> int:
        """Rebuild the ANN index from SQLite (re-embedding every item with ``reembed``)."""
        return X.reindex(self, reembed)

    def _check_dim(self, vectors: np.ndarray) -> None:
        from ..errors import EmbedderMismatchError

        if vectors.ndim != 2 or vectors.shape[1] != self.embedder.dimension:
            raise EmbedderMismatchError(
                f"the embedder returned {vectors.shape[-1]}-dim vectors but the cube uses {self.embedder.dimension}"
            )
        check_finite(vectors, self.embedder)


def _views(item: MemoryItem) -> str:
    """What an item's vector is made from (:func:`.embed.embed_views`), as one comparable key."""
    return "\x00".join(f"{w}:{t}" for t, w in embed_views(item))
