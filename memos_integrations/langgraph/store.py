"""MemOSStore: LangGraph's long-term memory store (``BaseStore``) over a MemCube.

Where it sits: the LangGraph face's store. Values live in the cube's database (``lg_store``, with
``lg_store_ns`` recording namespace order; the statements are in :mod:`memos_integrations.storage.tables.lgstore`); each indexed text of a value is also a cube memory item
(``parent_id`` = its namespace, scope from the namespace, provenance, versions, audit), so semantic
search is the cube's hybrid retrieval (dense + keyword, fused) and the memories are visible to the
rest of the engine. Only the two primitives ``batch``/``abatch`` are implemented; ``get``, ``put``,
``search``, ``list_namespaces`` and their async twins are the base class's sugar.

Semantics follow ``InMemoryStore`` (tested side by side): reads in a batch see the state before the
batch's writes; the last write to a key in a batch wins; results list namespaces in first-write order
and keys in insertion order. Differences, on purpose: namespaces without live items are not listed;
a range filter on a missing field does not match (InMemoryStore raises); ``created_at`` survives updates;
scores are the fused retrieval score, not a cosine.

TTL: ``supports_ttl = True``; ``ttl`` minutes per item (or ``ttl={"default_ttl": ...}``), refreshed on
read unless ``refresh_ttl=False``; expired items are invisible at once and removed by ``sweep_ttl()``
or the sweeper thread (``start_ttl_sweeper``; automatic with ``sweep_interval_minutes``).

Who is acting: ``batch`` / ``abatch`` read the run's principal (``user_id`` / ``agent_id`` from the run's
``context=`` or ``config["configurable"]``, see :mod:`.access`) and check every op against ``policy``
(a default :class:`NamespacePolicy` when none is given) before any runs; searches and namespace listings
are filtered to what the principal may read. Outside a run the store acts for the application, unchecked.

Robustness: a blank query ranks by its embedding alone (as ``InMemoryStore`` does, no error); a query
longer than the cube's ``max_text_chars`` is clipped; an indexed text longer than that is indexed in
pieces (``path#i``), so a 40k-character message is stored and found instead of refused.

Embedder identity: a custom ``index={"embed": ...}`` must compute the cube's vector space: its
fingerprint (the embedding of a fixed probe text) is compared with the cube's, not only its dimension.

Remote: on a :class:`~memos_integrations.remote.RemoteCube` the store validates each batch here and
sends it whole to the service (:mod:`memos_integrations.remote_store`), which runs this class on the
real cube as the API key's user and agent, with its default :class:`NamespacePolicy` (the rules and
grants kept in that cube); ``policy=``, ``scope=`` and a custom ``index["embed"]`` stay local-only.

Sync/async policy: the core is synchronous; ``abatch`` runs ``batch`` in a worker thread
(:func:`memos_integrations.aio.in_thread`, which carries the run's context along).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
)

from ..aio import in_thread
from ..errors import EmbedderMismatchError, InvalidInputError, InvalidTypeError
from ..face_api import CubeAPI, as_cube
from ..items import LIVE_STATES, Kind, MemoryItem, from_epoch
from ..remote_store import RemoteStoreOps, remote_of
from ..storage.tables.lgstore import StoreTables
from ..textual.embed import LangChainEmbedder
from ..textual.filters import MemoryFilter
from . import store_logic as L
from .access import NamespacePolicy, Principal, current_config, run_principal


class MemOSStore(BaseStore):
    """LangGraph ``BaseStore`` backed by a MemCube: persistent, searchable, governed long-term memory.

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langgraph]'

    Instantiate:
        >>> import tempfile
        >>> from memos_integrations import MemCube
        >>> from memos_integrations.langgraph import MemOSStore
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> store = MemOSStore(cube, index={"fields": ["text"]}, ttl={"default_ttl": 60 * 24})

    Usage:
        >>> store.put(("users", "alice", "memories"), "m1", {"text": "Alice drinks genmaicha tea"})
        >>> store.put(("users", "alice", "memories"), "m2", {"text": "Alice lives in Lisbon", "n": 2})
        >>> [h.key for h in store.search(("users", "alice"), query="what tea does she like", limit=1)]
        ['m1']
        >>> [h.key for h in store.search(("users",), filter={"n": {"$gte": 2}})]
        ['m2']
        >>> store.list_namespaces(prefix=("users",), max_depth=2)
        [('users', 'alice')]
        >>> cube.search("tea", user_id="alice")[0].item.metadata["lg_store"]["key"]   # cube-visible
        'm1'
        >>> cube.close()

    Async: ``await store.aput(...)``, ``await store.asearch(...)`` run the same code in a worker thread.
    """

    supports_ttl: bool = True

    def __init__(
        self,
        cube: Any,
        *,
        index: IndexConfig | bool | None = None,
        ttl: TTLConfig | None = None,
        scope: Callable[[Sequence[str]], Mapping[str, str]] = L.default_scope,
        plan: Any = "balanced",
        policy: Any = None,
        kind: Kind | str = Kind.FACT,
    ) -> None:
        """Args:
            cube: the cube holding values (its database) and their index items (its memories).
            index: ``True``, ``{"fields": [...]}`` (the cube's embedder) or ``{"dims", "embed", "fields"}``;
                a custom ``embed`` must be the cube's model (checked by fingerprint).
            ttl: LangGraph's ``TTLConfig`` (minutes).
            scope: namespace -> cube scope (``user_id`` / ``agent_id``) of index items.
            plan: the cube's retrieval plan for semantic search.
            policy: who may read/write which namespaces; default ``NamespacePolicy(cube)``.
            kind: the memory kind of index items.

        Raises:
            EmbedderMismatchError: ``index["embed"]`` computes another vector space than the cube's.
            InvalidInputError: on a :class:`~memos_integrations.remote.RemoteCube`, a ``policy``, a
                ``scope`` or an ``index["embed"]`` (the service applies its own; see the module docstring).
        """
        self.cube: CubeAPI = as_cube(cube, "MemOSStore")
        self.ttl_config = ttl
        self.scope, self.plan, self.kind = scope, plan, Kind(kind)
        self.clock: Callable[[], float] = time.time
        remote = remote_of(self.cube)
        self.remote: RemoteStoreOps | None = None
        if remote is None:
            self.tables = StoreTables(self.cube.store.db)
            self.policy: NamespacePolicy = policy if policy is not None else NamespacePolicy(self.cube)
            self.index_config, self.fields, self._embeddings = self._index(index)
        else:  # the service runs this class on the real cube; each batch is one request
            if policy is not None or scope is not L.default_scope:
                raise InvalidInputError(
                    "MemOSStore on a RemoteCube uses the service's namespace rules and default scope: drop "
                    "policy= and scope= (grant access on the service's cube), or use a local MemCube")
            self.remote = RemoteStoreOps(remote, index=index, plan=plan, kind=self.kind)
            self.index_config, self.fields, self._embeddings = self.remote.index, [], None
            # no table and no policy on this side: the service has both (None, so a stray use fails loudly)
            self.tables = None  # type: ignore[assignment]
            self.policy = None  # type: ignore[assignment]
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()
        if ttl and ttl.get("sweep_interval_minutes"):
            self.start_ttl_sweeper()

    def _index(self, index: IndexConfig | bool | None) -> tuple[dict[str, Any] | None, list[str], Any]:
        if index is None or index is False:
            return None, [], None
        config: dict[str, Any] = {} if index is True else dict(index)
        dims = config.get("dims", self.cube.embedder.dimension)
        if dims != self.cube.embedder.dimension:
            raise InvalidInputError(
                f"index dims {dims} differ from the cube's embedder ({self.cube.embedder.dimension}); "
                "a cube keeps one vector space: use its embedder (omit 'embed') or a cube built with yours"
            )
        embeddings = ensure_embeddings(config["embed"]) if config.get("embed") is not None else None
        if embeddings is not None:
            self._check_same_space(config["embed"], embeddings)
        return config, list(config.get("fields") or ["$"]), embeddings

    def _check_same_space(self, given: Any, embeddings: Any) -> None:
        """Same dimension is not same model: compare what the given embedder computes with the cube's."""
        ours = self.cube.embedder
        if given is ours or given is getattr(ours, "embeddings", None):
            return
        theirs = LangChainEmbedder(embeddings, name="index['embed']")
        if theirs.dimension != ours.dimension or theirs.fingerprint != ours.fingerprint:
            raise EmbedderMismatchError(
                f"index['embed'] computes another vector space ({theirs.dimension} dims, fingerprint "
                f"{theirs.fingerprint}) than cube {self.cube.cube_id!r}'s embedder {ours.name!r} ({ours.dimension} dims, "
                f"fingerprint {ours.fingerprint}); omit 'embed' to use the cube's embedder, or use a cube built with yours"
            )

    # -- the two primitives -----------------------------------------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self.run_as(list(ops), self.acting())

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await in_thread(self.batch, list(ops))

    # -- who is acting ------------------------------------------------------------------------------
    def acting(self) -> Principal | None:
        """The run's principal (None outside a run, or in a run naming nobody unless the policy is strict)."""
        principal = run_principal(self.cube.audit)
        if self.remote is not None:  # the service checks the principal against the key and applies its policy
            return principal
        if principal is None and self.policy.strict and current_config() is not None:
            self.policy.refuse_anonymous_run()
        return principal

    def run_as(self, ops: list[Op], principal: Principal | None, *,
               sources: Mapping[tuple[tuple[str, ...], str], Sequence[str]] | None = None) -> list[Result]:
        """:meth:`run` ``ops`` for ``principal``: every op checked first, reads filtered (None: unchecked).

        On a RemoteCube the batch is validated here and sent: the service runs it as the API key's
        principal (``principal`` is the run's claim, refused there if it names someone else).
        """
        if self.remote is not None:
            for op in ops:
                self._validate(op)
            return self.remote.run(ops, principal, sources)
        if principal is None:
            return self.run(ops, sources=sources)
        for op in ops:
            self._validate(op)
        self.policy.check_ops(principal, ops)
        for op in ops:
            if isinstance(op, PutOp):
                self.policy.check_scope(principal, op.namespace, self.scope(op.namespace))
        needs_filter = any(isinstance(op, (SearchOp, ListNamespacesOp)) for op in ops)
        return self.run(ops, principal=principal.audit_name, sources=sources,
                        readable=self.policy.readable(principal) if needs_filter else None)

    def put_as(self, principal: Principal | None, namespace: tuple[str, ...], key: str, value: Mapping[str, Any], *,
               sources: Sequence[str], index: Any = None, ttl: float | None = None, created_by: str | None = None) -> None:
        """``put`` with provenance for ``principal`` (checked; None: unchecked)."""
        if ttl is None and self.ttl_config:
            ttl = self.ttl_config.get("default_ttl")
        if self.remote is not None:  # ``created_by`` is the service's to set: the key's principal
            self.run_as([PutOp(namespace, key, value, index, ttl)], principal, sources={(namespace, key): sources})
            return
        if principal is not None:
            self.policy.check(principal, L.check_labels(namespace, for_write=True), "write")
            self.policy.check_scope(principal, namespace, self.scope(namespace))
        self.run([PutOp(namespace, key, value, index, ttl)],
                 principal=created_by or (principal.audit_name if principal else None), sources={(namespace, key): sources})

    def run(
        self, ops: list[Op], *, principal: str | None = None, readable: L.Readable | None = None,
        sources: Mapping[tuple[tuple[str, ...], str], Sequence[str]] | None = None,
    ) -> list[Result]:
        """Execute ``ops``: everything is validated first, reads see the pre-batch state, then all
        writes commit in one transaction (the last write to a key wins)."""
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            self._validate(op)
            if isinstance(op, PutOp):
                puts[(op.namespace, str(op.key))] = op
        now = self.clock()
        results: list[Result] = []
        for op in ops:
            if isinstance(op, GetOp):
                results.append(self._get(op, now))
            elif isinstance(op, SearchOp):
                results.append(self._search(op, now, readable))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op, now, readable))
            else:
                results.append(None)
        if puts:
            self._write(list(puts.values()), now, principal, sources or {})
        return results

    def _validate(self, op: Op) -> None:
        if isinstance(op, PutOp):
            L.check_labels(op.namespace, for_write=True)
            if not isinstance(op.key, str) or not op.key:
                raise InvalidInputError(f"store keys are non-empty strings, got {op.key!r}")
            if op.value is not None:
                L.check_value(op.value)
            L.check_index_arg(op.index)
            L.expiry(0.0, op.ttl)
        elif isinstance(op, GetOp):
            L.check_labels(op.namespace)
        elif isinstance(op, SearchOp):
            L.check_labels(op.namespace_prefix)
            L.check_filter(op.filter)
            if op.limit < 0 or op.offset < 0:
                raise InvalidInputError("search limit and offset must be >= 0")
        elif isinstance(op, ListNamespacesOp):
            for cond in op.match_conditions or ():
                L.check_labels(tuple(p for p in cond.path if p != "*"))
        else:
            raise InvalidTypeError(f"unknown store operation {type(op).__name__}; use GetOp, PutOp, SearchOp or ListNamespacesOp")

    # -- reads --------------------------------------------------------------------------------------
    def _get(self, op: GetOp, now: float) -> Item | None:
        rows = self.tables.get(L.encode(op.namespace), str(op.key), now)
        if not rows:
            return None
        if op.refresh_ttl:
            self._refresh(rows, now)
        return _item(rows[0])

    def _rows_under(self, prefix: tuple[str, ...], now: float, limit: int = -1, offset: int = 0) -> list[tuple[Any, ...]]:
        return self.tables.under(L.encode(prefix), L.prefix_range(prefix), now, limit, offset)

    def _search(self, op: SearchOp, now: float, readable: L.Readable | None) -> list[SearchItem]:
        flt = L.check_filter(op.filter)
        want = op.offset + op.limit

        def ok(row: tuple[Any, ...]) -> bool:
            return (readable is None or readable(L.decode(row[0]))) and (flt is None or L.value_matches(json.loads(row[2]), flt))

        page: list[tuple[tuple[Any, ...], float | None]]
        unscored: float | None = None
        if op.query and self.index_config is not None:
            scored, scoreless = self._ranked(op, now, ok, want)
            page = [(row, score) for row, score in scored[op.offset : want]]
            if len(page) < op.limit:  # as InMemoryStore: fill with matching items that have no vectors
                page += [(row, unscored) for row in scoreless[: op.limit - len(page)]]
        elif flt is None and readable is None:
            page = [(row, unscored) for row in self._rows_under(op.namespace_prefix, now, op.limit, op.offset)]
        else:
            page = [(row, unscored) for row in self._rows_under(op.namespace_prefix, now) if ok(row)][op.offset : want]
        if op.refresh_ttl:
            self._refresh([row for row, _ in page], now)
        return [SearchItem(*_item_args(row), score=score) for row, score in page]  # type: ignore[misc]

    def _ranked(
        self, op: SearchOp, now: float, ok: Callable[[tuple[Any, ...]], bool], want: int,
    ) -> tuple[list[tuple[tuple[Any, ...], float]], list[tuple[Any, ...]]]:
        """Hybrid retrieval over the prefix's index items, best key first; grows the pool until enough
        keys pass the value filter and access check (or the prefix is exhausted).

        The query is embedded once, whatever the number of rounds. The first pool is three times what
        the page needs (the retrieval legs gather ``plan.candidates`` hits anyway, so this costs little)
        so that a value filter rarely forces a second round; the prefix is counted only if it does.
        """
        assert op.query is not None
        flt = MemoryFilter(parent_prefix=L.parent_of(op.namespace_prefix), states=list(LIVE_STATES))
        embed = self._embeddings.embed_query if self._embeddings else self.cube.embedder.embed_query
        # clipped to what the cube accepts (the embedder reads far fewer tokens anyway); a blank query
        # ranks by its vector alone, as InMemoryStore does
        query = op.query[: self._max_chars()]
        qvec = np.asarray(embed(query), np.float32)
        text = query if query.strip() else ""
        total: int | None = None
        pool = max(want * 3, 30)
        while True:
            hits = self.cube.text_mem.search(text, flt, top_k=pool, plan=self.plan, query_vector=qvec)
            best: dict[tuple[str, str], float] = {}
            for hit in hits:  # best first: the first hit of a key is its max (max-pooling over fields)
                meta = hit.item.metadata.get("lg_store") or {}
                best.setdefault((L.encode(meta.get("namespace", [])), meta.get("key", "")), hit.score)
            rows = self._rows_for(list(best), now)
            scored = [(rows[k], s) for k, s in best.items() if k in rows and ok(rows[k])]
            if len(scored) >= want:
                break
            if total is None:
                total = self.cube.store.count(flt)
            if pool >= total:
                break
            pool *= 4
        if len(scored) >= want:
            return scored, []
        scoreless = [r for r in self._rows_under(op.namespace_prefix, now) if r[6] == "[]" and ok(r)]
        return scored, scoreless

    def _max_chars(self) -> int:
        return int(getattr(getattr(self.cube, "config", None), "max_text_chars", 0) or 32_000)

    def _rows_for(self, keys: Sequence[tuple[str, str]], now: float) -> dict[tuple[str, str], tuple[Any, ...]]:
        return self.tables.rows_for(keys, now)

    def _list_namespaces(self, op: ListNamespacesOp, now: float, readable: L.Readable | None) -> list[tuple[str, ...]]:
        spaces = (L.decode(ns) for ns in self.tables.live_namespaces(now))
        if readable is not None:
            spaces = (ns for ns in spaces if readable(ns))
        return L.list_namespaces(spaces, op.match_conditions, op.max_depth, op.limit, op.offset)

    def _refresh(self, rows: Sequence[tuple[Any, ...]], now: float) -> None:
        due = [(now + r[5] * 60.0, r[0], r[1]) for r in rows if r[5] is not None]
        if due:
            self.tables.refresh(due)

    # -- writes -------------------------------------------------------------------------------------
    def _write(self, puts: list[PutOp], now: float, principal: str | None,
               sources: Mapping[tuple[tuple[str, ...], str], Sequence[str]]) -> None:
        items: list[MemoryItem] = []
        for op in puts:
            if op.value is None or op.index is False or self.index_config is None:
                continue
            ns = L.encode(op.namespace)
            scope = dict(self.scope(op.namespace))
            for path, text in L.index_texts(op.value, op.index or self.fields, self._max_chars()):
                items.append(MemoryItem(
                    text=text, id=L.index_item_id(ns, op.key, path), kind=self.kind,
                    user_id=scope.get("user_id"), agent_id=scope.get("agent_id"), cube_id=self.cube.cube_id,
                    metadata={"lg_store": {"namespace": list(op.namespace), "key": op.key, "path": path}},
                    parent_id=L.parent_of(op.namespace), created_by=principal, method="langgraph.store",
                    sources=list(sources.get((op.namespace, op.key), ())),
                ))
        vectors = None
        if items and self._embeddings is not None:  # embed outside the transaction: a failure writes nothing
            vectors = np.asarray(self._embeddings.embed_documents([i.text for i in items]), np.float32)
        elif items:
            vectors = self.cube.embedder.embed_documents([i.text for i in items])
        new_ids: dict[tuple[str, str], list[str]] = {}
        for it in items:
            meta = it.metadata["lg_store"]
            new_ids.setdefault((L.encode(meta["namespace"]), meta["key"]), []).append(it.id)
        keys = [(L.encode(op.namespace), op.key) for op in puts]
        with self.tables.transaction() as c:
            self.tables.write_lock(c)
            old = self.tables.item_ids(c, keys)  # one query for the whole batch
            stale = [i for k in keys if k in old for i in json.loads(old[k]) if i not in new_ids.get(k, [])]
            self.tables.delete(c, [k for k, op in zip(keys, puts) if op.value is None])
            self.tables.upsert(c, [
                (ns, key, L.check_value(op.value), now, now, L.expiry(now, op.ttl), op.ttl, json.dumps(new_ids.get((ns, key), [])))
                for (ns, key), op in zip(keys, puts) if op.value is not None
            ])
            self.tables.drop_empty(c, {ns for ns, _ in keys})
            if items:
                self.cube.text_mem.add_items(items, vectors=vectors)
            if stale:
                self.cube.text_mem.delete(stale, principal=principal)

    def put_with_provenance(
        self, namespace: tuple[str, ...], key: str, value: Mapping[str, Any], *, sources: Sequence[str],
        principal: str | None = None, index: Any = None, ttl: float | None = None,
    ) -> None:
        """``put`` that records where the memory came from (e.g. ``thread:t1``, ``checkpoint:...``).

        Args:
            namespace, key, value: as ``put``.
            sources: provenance pointers stored on the index items.
            principal: the ``created_by`` name (default: the run's principal); access is the run's.
            index, ttl: as ``put``.

        Raises:
            AccessDeniedError: the run's principal may not write ``namespace`` (audited).
        """
        self.put_as(self.acting(), namespace, key, value, sources=sources, index=index, ttl=ttl, created_by=principal)

    # -- TTL ----------------------------------------------------------------------------------------
    def sweep_ttl(self) -> int:
        """Delete expired items now (their index items become tombstones); returns how many."""
        if self.remote is not None:
            return self.remote.sweep()
        now = self.clock()
        rows = self.tables.expired(now)
        if not rows:
            return 0
        with self.tables.transaction() as c:
            self.tables.delete_expired(c, [(r[0], r[1]) for r in rows], now)
            self.tables.drop_empty(c, {r[0] for r in rows})
            ids = [i for r in rows for i in json.loads(r[2])]
            if ids:
                self.cube.text_mem.delete(ids, principal="ttl-sweeper")
        return len(rows)

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> threading.Thread:
        """Run :meth:`sweep_ttl` every interval in a daemon thread (until :meth:`stop_ttl_sweeper`)."""
        if self._sweeper is not None and self._sweeper.is_alive():
            return self._sweeper
        minutes = sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(float(minutes) * 60.0):
                self.sweep_ttl()

        self._sweeper = threading.Thread(target=loop, name="memos-ttl-sweeper", daemon=True)
        self._sweeper.start()
        return self._sweeper

    def stop_ttl_sweeper(self, timeout: float | None = 5.0) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout)
            self._sweeper = None

    # -- governance ---------------------------------------------------------------------------------
    def as_principal(self, principal: str) -> Any:
        """A view of this store acting as ``principal`` (an agent name), checked by ``self.policy``.

        Not needed inside a run that names its ``agent_id`` / ``user_id``: the store itself checks those.
        """
        from .access import ScopedStore

        return ScopedStore(self, principal)

    def close(self) -> None:
        self.stop_ttl_sweeper()


def _item_args(row: tuple[Any, ...]) -> tuple[Any, ...]:
    ns, key, value, created, updated = row[:5]
    return L.decode(ns), key, json.loads(value), from_epoch(created), from_epoch(updated)


def _item(row: tuple[Any, ...]) -> Item:
    ns, key, value, created, updated = _item_args(row)
    return Item(value=value, key=key, namespace=ns, created_at=created, updated_at=updated)
