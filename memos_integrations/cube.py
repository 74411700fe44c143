"""MemCube: one directory holding plaintext, activation and parametric memory.

```
<cube>/cube.json     format version, cube id, embedder (name, dimension, fingerprint), config (no secrets)
<cube>/memory.db     SQLite: the source of truth (see storage/sqlite.py; absent with another store backend)
<cube>/vectors/      Chroma persistent directory (absent when vectors live on a Chroma server)
<cube>/kv/           KV caches (activation memory), safetensors + JSON
<cube>/adapters/     LoRA adapters (parametric memory), safetensors + JSON manifest
```

A cube opened with another embedder than the one it was built with is refused
(:class:`EmbedderMismatchError`); a cube whose files cannot be read is :class:`CubeCorruptedError`.
Opening replays index writes a crash left behind, so the ANN index always matches SQLite.

Processes: an embedded cube (vectors in ``<cube>/vectors``) is held by one process from open to
close (``<cube>/cube.lock``; a second process gets :class:`CubeLockedError`; the lock dies with its
process). Within a process a cube may be opened several times and used from several threads. A cube
whose vectors live on a Chroma server takes no such lock: several processes may write it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from . import cube_io
from .config import CubeConfig
from .cube_backends import _check_backends, _open_graph, _open_index, _open_store
from .cube_reader import ReaderMixin
from .cubelock import CubeHold
from .errors import (
    CubeCorruptedError,
    CubeNotFoundError,
    EmbedderMismatchError,
    InvalidInputError,
    InvalidTypeError,
)
from .items import LIVE_STATES, Edge, Kind, Lifecycle, MemoryItem, SearchHit, check_int, utcnow
from .storage.base import GraphStore, VectorIndex
from .storage.chroma import collection_name  # noqa: F401 - historical import path
from .storage.sqlite import SQLiteStore
from .storage.sqlstore import SQLStore
from .textual.embed import Embedder, as_embedder
from .textual.filters import MemoryFilter
from .textual.memory import TextualMemory, ids_of, new_item
from .textual.retrieve import SearchPlan

FORMAT_VERSION = 1
CUBE_FILE = "cube.json"
#: Opening compares every id of the index with SQLite up to this many live items (37 ms at
#: 10,000 ids on the embedded index); above it only the counts are compared, and a drift with equal
#: counts is left to ``MemCube.reconcile()`` (search re-checks hits against SQLite either way).
VERIFY_IDS_MAX = 20_000


#: present while a dump or clone is being written; a folder holding it is not a cube
INCOMPLETE_FILE = "DUMP_INCOMPLETE"


class MemCube(ReaderMixin):
    """A memory cube on disk.

    Example:
        >>> import tempfile
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> _ = cube.add(messages=[{"role": "user", "name": "Caroline", "id": "D1:3",
        ...                         "content": "I went to a support group yesterday."}],
        ...              user_id="caroline", session_id="s1", timestamp="1:56 pm on 8 May, 2023")
        >>> hit = cube.search("When did Caroline go to the support group?", user_id="caroline")[0]
        >>> hit.item.sources, hit.item.event_time.date().isoformat()
        (['D1:3'], '2023-05-08')
        >>> cube.close()
    """

    def __init__(
        self,
        path: Path,
        config: CubeConfig,
        embedder: Embedder,
        store: SQLStore,
        index: VectorIndex,
        hold: CubeHold | None = None,
        graph: GraphStore | None = None,
    ) -> None:
        self.path = path.resolve()  # absolute: later writes (KV flush on close) must not follow a chdir
        self._hold = hold  # this process's lock on an embedded cube, released by close()
        self._closed = False
        self.config = config
        self.cube_id: str = config.cube_id or path.name
        self.embedder = embedder
        self.store = store
        self.index = index
        self.graph: GraphStore = graph if graph is not None else _open_graph(config, store)
        self.text_mem = TextualMemory(
            store, index, self.graph, embedder, cube_id=self.cube_id,
            max_text_chars=config.max_text_chars, exact_search_max=config.vector.exact_search_max,
            max_message_chars=config.max_message_chars, part_chars=config.part_chars, query_chars=config.query_chars,
            write_lock=store.index_write_lock(),  # None: the cube folder's file lock; PostgreSQL: one for every machine
        )

    # -- opening and creating -----------------------------------------------------------------
    @classmethod
    def init_from_dir(
        cls, path: str | Path, config: CubeConfig | None = None, *, embedder: Any = None,
        index: VectorIndex | None = None, reader: Any = None,
    ) -> MemCube:
        """Open the cube at ``path``, or create an embedded one there if the directory has none.

        ``reader`` (an :class:`~memos_integrations.readers.LLMReader`) reads messages into memories.
        """
        path = Path(path)
        if (path / CUBE_FILE).exists():
            return cls.open(path, embedder=embedder, index=index, reader=reader)
        return cls.create(path, config, embedder=embedder, index=index, reader=reader)

    @classmethod
    def create(
        cls, path: str | Path, config: CubeConfig | None = None, *, embedder: Any = None,
        index: VectorIndex | None = None, reader: Any = None,
    ) -> MemCube:
        path = Path(path)
        if (path / CUBE_FILE).exists():
            raise InvalidInputError(f"{path} already holds a cube; open it with MemCube.open or init_from_dir")
        if path.exists() and not path.is_dir():
            raise InvalidInputError(f"{path} is a file; give a directory for the cube")
        config = config or CubeConfig()
        _check_backends(config)  # an unknown backend is refused before anything is written
        if reader is not None and config.reader == "fast":  # cube.json records the reader (never its key)
            config = config.model_copy(update={"reader": reader.config})
        if config.cube_id is None:
            config = config.model_copy(update={"cube_id": path.resolve().name})
        if config.vector.mode == "http" and config.vector.collection is None:
            # a server is shared: two cubes both called "notes" must not share (and reconcile away) one
            # collection, so a server-backed cube records a collection name of its own in cube.json
            unique = f"cube_{config.cube_id}"[:40] + "_" + secrets.token_hex(6)
            config = config.model_copy(update={"vector": config.vector.model_copy(update={"collection": unique})})
        emb = as_embedder(embedder if embedder is not None else config.embedder)
        path.mkdir(parents=True, exist_ok=True)
        hold = _hold(path, config)
        try:
            return cls._create(path, config, emb, index, hold)._attach_reader(reader)
        except BaseException:
            if hold is not None:
                hold.release()
            raise

    @classmethod
    def _create(cls, path: Path, config: CubeConfig, emb: Embedder, index: VectorIndex | None,
                hold: CubeHold | None) -> MemCube:
        if (path / CUBE_FILE).exists():  # another process created it while this one waited for the hold
            raise InvalidInputError(f"{path} already holds a cube; open it with MemCube.open or init_from_dir")
        header = {
            "format_version": FORMAT_VERSION,
            "cube_id": config.cube_id,
            "created_at": utcnow().isoformat(),
            "embedder": {"name": emb.name, "dimension": emb.dimension, "fingerprint": emb.fingerprint},
            "config": config.to_json_dict(),
        }
        tmp = path / (CUBE_FILE + ".tmp")
        tmp.write_text(json.dumps(header, indent=2))
        store = _open_store(path, config, create=True)
        try:  # the index too, before cube.json: an unreachable Chroma server must not leave a cube behind
            index = index or _open_index(path, config, store)
        except BaseException:
            store.close()
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path / CUBE_FILE)  # cube.json appears last: a half-created cube is not a cube
        return cls(path, config, emb, store, index, hold)

    @classmethod
    def open(cls, path: str | Path, *, embedder: Any = None, index: VectorIndex | None = None,
             reader: Any = None) -> MemCube:
        """Open an existing cube; the embedder must be the one it was built with.

        Raises:
            CubeNotFoundError: no cube at ``path``.
            CubeLockedError: another process holds this embedded cube (close it there, or use a Chroma server).
            EmbedderMismatchError: ``embedder`` is not the one the cube was built with.
            CubeCorruptedError: the cube's files cannot be read.
        """
        path = Path(path)
        header = read_header(path)
        try:
            config = CubeConfig.model_validate(header["config"])
        except Exception as exc:
            raise CubeCorruptedError(f"{path / CUBE_FILE} has an invalid config: {exc}") from exc
        _check_backends(config)
        hold = _hold(path, config)  # before anything loads: a refused open costs nothing
        try:
            return cls._open_held(path, header, config, embedder, index, hold)._attach_reader(reader)
        except BaseException:
            if hold is not None:
                hold.release()
            raise

    @classmethod
    def _open_held(cls, path: Path, header: dict[str, Any], config: CubeConfig, embedder: Any,
                   index: VectorIndex | None, hold: CubeHold | None) -> MemCube:
        emb = as_embedder(embedder if embedder is not None else config.embedder)
        recorded = header["embedder"]
        # the fingerprint decides: same vectors under another name (numpy vs sentence-transformers) match
        if emb.dimension != recorded["dimension"] or emb.fingerprint != recorded["fingerprint"]:
            raise EmbedderMismatchError(
                f"cube {path} was built with embedder {recorded['name']!r} ({recorded['dimension']} dims, "
                f"fingerprint {recorded['fingerprint']}) but {emb.name!r} ({emb.dimension} dims, fingerprint "
                f"{emb.fingerprint}) was given; open it with the same embedder, or export it and import into a new cube"
            )
        store = _open_store(path, config, create=False)
        try:
            cube = cls(path, config, emb, store, index or _open_index(path, config, store), hold)
        except BaseException:
            store.close()
            raise
        try:
            cube._recover()
        except BaseException:
            cube._hold = None  # the caller releases it
            cube.close()
            raise
        return cube

    load = open  # MemOS spelling

    def _recover(self) -> None:
        """Replay index writes a crash left in the outbox; diff all ids if the counts disagree, or
        always while the cube is small enough for that to be cheap (:data:`VERIFY_IDS_MAX`)."""
        report = self.text_mem.reconcile()
        live = self.store.count(MemoryFilter(states=[s for s in Lifecycle if s != Lifecycle.DELETED]))
        if live <= VERIFY_IDS_MAX or live != self.index.count():
            full = self.text_mem.reconcile(full=True)
            report = {k: report[k] + full[k] for k in report}
        graph_reconcile = getattr(self.graph, "reconcile", None)  # a projected graph replays its outbox
        if graph_reconcile is not None:
            report.update(graph_reconcile())
        if any(report.values()):
            self.audit("reconcile", "system", self.cube_id, report)

    # -- the three memory slots -----------------------------------------------------------------
    @cached_property
    def act_mem(self) -> Any:
        """Activation memory: KV caches of a local model (needs the ``[local]`` extra)."""
        from .activation import ActivationMemory

        return ActivationMemory.for_cube(self)

    @cached_property
    def para_mem(self) -> Any:
        """Parametric memory: LoRA adapters of a local model (needs the ``[local]`` extra)."""
        from .parametric import ParametricMemory

        return ParametricMemory.for_cube(self)

    # -- plaintext memory: the everyday API ------------------------------------------------------
    def add(
        self,
        messages: Sequence[Mapping[str, Any]] | None = None,
        memory: str | Sequence[str] | None = None,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        timestamp: Any = None,
        kind: Kind | str = Kind.FACT,
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        sources: Sequence[str] = (),
        principal: str | None = None,
        mode: str | None = None,
    ) -> list[MemoryItem]:
        """Add chat ``messages`` (read into one item each) or ``memory`` text(s) (one item each).

        A text of up to ``CubeConfig.max_message_chars`` is kept whole; above ``max_text_chars`` it is
        also indexed as parts (``chunk`` items whose ``metadata["part_of"]`` is its id), which are not
        returned here and are deleted with it.

        ``mode`` (messages only; default: the reader's ``mode``, or ``"fast"`` without a reader):
        ``"fast"`` stores the raw messages only; ``"fine"`` also reads them with the LLM reader before
        returning; ``"async"`` stores them and queues the reading (:meth:`wait`, :meth:`pending`). With
        a reader or a mode the result is a :class:`~memos_integrations.readers.AddResult`: still the
        list of items written, with ``operations``, ``usage`` and ``note``.
        """
        if (messages is None) == (memory is None):
            raise InvalidInputError("pass exactly one of messages=[...] or memory='...'")
        if isinstance(tags, str) or isinstance(sources, str):
            raise InvalidTypeError("tags and sources must be lists of strings, e.g. tags=['work']")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidTypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        for name, value in (("user_id", user_id), ("agent_id", agent_id), ("session_id", session_id)):
            if value is not None and not isinstance(value, str):
                raise InvalidTypeError(f"{name} must be a string, got {type(value).__name__}")
        if messages is not None and (mode is not None or self._reader is not None):
            return self.reader_engine.add(messages, mode=mode, user_id=user_id, agent_id=agent_id,
                                          session_id=session_id, timestamp=timestamp, principal=principal, tags=tags)
        if messages is not None:
            return self.text_mem.add_messages(
                messages, user_id=user_id, agent_id=agent_id, session_id=session_id, timestamp=timestamp,
                principal=principal, tags=tags,
            )
        texts = [memory] if isinstance(memory, str) else memory
        if not isinstance(texts, Sequence) or not texts:
            raise InvalidTypeError("memory must be a string or a non-empty list of strings")
        items = [
            new_item(
                t, kind=kind, user_id=user_id, agent_id=agent_id, session_id=session_id, event_time=timestamp,
                tags=list(tags), metadata=dict(metadata or {}), sources=list(sources),
                created_by=principal or user_id, method="direct",
            )
            for t in texts
        ]
        return self.text_mem.add_whole(items)

    def add_items(self, items: Sequence[MemoryItem], edges: Sequence[Edge] = (), vectors: Any = None) -> list[MemoryItem]:
        return self.text_mem.add_items(items, edges, vectors)

    def search(
        self,
        query: str,
        *,
        user_id: str | Sequence[str] | None = None,
        agent_id: str | Sequence[str] | None = None,
        session_id: str | Sequence[str] | None = None,
        kinds: Sequence[Kind | str] | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        time_from: Any = None,
        time_to: Any = None,
        top_k: int = 10,
        plan: SearchPlan | str | None = None,
        filter: MemoryFilter | None = None,
        now: datetime | None = None,
        query_vector: Any = None,
        as_of: Any = None,
        current_session: str | None = None,
    ) -> list[SearchHit]:
        """Hybrid search within a scope; see :class:`SearchPlan` for the presets.

        Returns the current truth (memories the reader superseded are left out); ``as_of`` (a time)
        returns what was true then instead (``valid_from <= as_of < valid_to``). ``current_session`` is
        the session the query comes from (not a filter): plans with ``working_first`` put the best hits
        of its working memory first.
        """
        from .textual.read import parse_time_bound, parse_timestamp

        flt = filter or MemoryFilter(
            user_id=user_id, agent_id=agent_id, session_id=session_id, kinds=kinds, tags_all=tags,
            metadata=metadata, time_from=parse_timestamp(time_from), time_to=parse_time_bound(time_to, upper=True),
            as_of=parse_timestamp(as_of), current=as_of is None,
        )
        if now is not None and not isinstance(now, datetime):  # a date or a string is a time too; a bool is not
            now = parse_timestamp(now)
        return self.text_mem.search(query, flt, top_k=top_k, plan=plan, now=now, query_vector=query_vector,
                                    session=current_session)

    def get(self, item_id: str) -> MemoryItem:
        return self.text_mem.get(item_id)

    def get_all(
        self, *, user_id: str | None = None, session_id: str | None = None, kinds: Sequence[Kind | str] | None = None,
        limit: int | None = None, offset: int = 0, include_archived: bool = False,
    ) -> list[MemoryItem]:
        if limit is not None:
            check_int(limit, "limit (or None for all)")
        check_int(offset, "offset")
        states = [s for s in Lifecycle if s != Lifecycle.DELETED] if include_archived else list(LIVE_STATES)
        flt = MemoryFilter(user_id=user_id, session_id=session_id, kinds=kinds, states=states)
        return self.text_mem.list_items(flt, limit, offset)

    def update(
        self, item_id: str, *, principal: str | None = None, expected_version: int | None = None, **changes: Any
    ) -> MemoryItem:
        """Write a new version of ``item_id``; see :meth:`TextualMemory.update`.

        Args:
            item_id: the memory to change.
            principal: who changes it.
            expected_version: write only if the stored version is still this one, else ConflictError.
            **changes: the fields to set (text, tags, metadata, state, ...).

        Returns:
            The new version. Concurrent updates each get their own version; none is overwritten.

        Raises:
            ItemNotFoundError: no live memory ``item_id``.
            ConflictError: the stored version is not ``expected_version`` (re-read and retry).
        """
        return self.text_mem.update(item_id, principal=principal, expected_version=expected_version, **changes)

    def delete(self, ids: str | Sequence[str], *, principal: str | None = None) -> int:
        if not isinstance(ids, (str, list, tuple)):
            raise InvalidTypeError(f"delete takes a memory id or a list of ids, got {type(ids).__name__}")
        return self.text_mem.delete(ids_of([ids] if isinstance(ids, str) else ids), principal=principal)

    def delete_all(self, *, user_id: str | None = None, principal: str | None = None) -> int:
        return self.delete([i.id for i in self.get_all(user_id=user_id, include_archived=True)], principal=principal)

    def history(self, item_id: str) -> list[MemoryItem]:
        """Every version of ``item_id``, oldest first: ``created_by`` says who wrote each one, and a
        version the reader wrote says why in ``metadata["op"]`` / ``metadata["reason"]`` (a superseded
        memory's last version names its successor in ``metadata["superseded_by"]``)."""
        return self.text_mem.history(item_id)

    def relate(self, src: str, dst: str, type: str, weight: float = 1.0, **metadata: Any) -> Edge:
        return self.text_mem.relate(src, dst, type, weight, metadata)

    def neighbors(self, item_id: str, depth: int = 1, types: Sequence[str] | None = None) -> list[MemoryItem]:
        return self.text_mem.neighbors(item_id, depth, types)

    # -- audit, stats, maintenance --------------------------------------------------------------
    def audit(self, action: str, principal: str | None, target: str | None, detail: Mapping[str, Any] | None = None,
              allowed: bool = True) -> None:
        self.store.audit(action, principal, target, dict(detail or {}), allowed)

    def audit_log(self, limit: int = 100, principal: str | None = None) -> list[dict[str, Any]]:
        return self.store.audit_log(limit, principal)

    def stats(self) -> dict[str, Any]:
        by_state: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        for state, kind, n in self.store.state_kind_counts():
            by_state[state] = by_state.get(state, 0) + n
            if state != Lifecycle.DELETED.value:
                by_kind[kind] = by_kind.get(kind, 0) + n
        tables = self.store.table_counts()
        return {
            "cube_id": self.cube_id, "path": str(self.path), "embedder": self.embedder.name,
            "items": sum(n for s, n in by_state.items() if s != Lifecycle.DELETED.value),
            "by_state": by_state, "by_kind": by_kind,
            "users": [u for u in self.store.user_ids() if u is not None],
            "versions": tables["versions"],
            "edges": tables["edges"],
            "vectors_indexed": self.index.count(),
            "vector_backend": self.config.vector.backend if self.config.vector.backend != "chroma" else self.config.vector.mode,
        }

    def organize(self, user_id: str | None = None, *, reader: Any = "auto", full: bool = False, **kw: Any) -> Any:
        """Partitions, topic summaries, session episodes and relation links, incrementally; returns an
        ``OrganizeReport``. ``reader``: by default this cube's LLM reader, if it has one (``None``: extractive).
        See :func:`memos_integrations.organize.organize`."""
        from .organize import organize

        return organize(self, user_id, reader=reader, full=full, **kw)

    def reindex(self, reembed: bool = False) -> int:
        return self.text_mem.reindex(reembed)

    def reconcile(self, full: bool = True) -> dict[str, int]:
        report = self.text_mem.reconcile(full)
        graph_reconcile = getattr(self.graph, "reconcile", None)  # a projected graph replays its outbox
        if graph_reconcile is not None:
            report.update(graph_reconcile())
        return report

    # -- copies ----------------------------------------------------------------------------------
    def dump(self, path: str | Path) -> MemCube:
        """Write a consistent, self-contained embedded copy of this cube to ``path`` and return it opened."""
        return self.clone(path, cube_id=self.cube_id)

    def clone(self, path: str | Path, cube_id: str | None = None) -> MemCube:
        """Copy this cube to ``path`` (an empty or absent directory) under ``cube_id``.

        The copy is built in a hidden sibling folder marked incomplete and renamed into place
        when whole, so a copy killed half-way is never mistaken for a cube: ``path`` is left
        absent (or empty) and the partial folder is refused by :meth:`open`.
        """
        return cube_io.clone(self, path, cube_id)

    def merge(self, other: MemCube, *, principal: str | None = None) -> int:
        """Copy every live item of ``other`` into this cube (ids kept; an existing id gets a new version)."""
        if other.embedder.fingerprint != self.embedder.fingerprint:
            raise EmbedderMismatchError("cannot merge cubes built with different embedders; export and import instead")
        items = other.get_all(include_archived=True)
        copied = [it.evolve(cube_id=self.cube_id) for it in items]
        edges = other.graph.edges([it.id for it in items], "out")
        for start in range(0, len(copied), 512):
            self.text_mem.add_items(copied[start : start + 512], max_chars=self.text_mem.max_message_chars)
        # a message that arrives with fewer parts (or none) than this cube's version of it had: the
        # parts left over index a text the message no longer has
        stale = set(self.text_mem._parts_of([it.id for it in copied if it.kind != Kind.CHUNK])) - {it.id for it in copied}
        if stale:
            self.text_mem.delete(sorted(stale), principal=principal)
        if edges:
            self.graph.add_edges(edges)
        self.audit("merge", principal, other.cube_id, {"items": len(copied), "edges": len(edges)})
        return len(copied)

    def export_jsonl(self, path: str | Path | None = None) -> Iterator[dict[str, Any]] | int:
        """Every version of every item (tombstones included) and every edge, as JSON lines.

        Returns the rows (an iterator) without ``path``, else how many were written to ``path``.
        See :mod:`.cube_io`.
        """
        return cube_io.export_jsonl(self, path)

    def import_jsonl(self, path: str | Path) -> int:
        """Load what :meth:`export_jsonl` wrote: versions are restored as they were (lossless).

        Every row is checked as :meth:`add` checks its input before anything is written; one bad
        row refuses the whole file (:class:`InvalidInputError` naming the line). See :mod:`.cube_io`.
        """
        return cube_io.import_jsonl(self, path)

    def close(self) -> None:
        """Flush, close the database and release this process's hold on the cube (once; again is a no-op)."""
        if self._closed:
            return
        self._closed = True
        try:
            engine = self.__dict__.get("reader_engine")
            if engine is not None:
                engine.stop()
            # activation memory holds caches in RAM; spill them so a new process reloads, not recomputes
            act = self.__dict__.get("act_mem")
            if act is not None and hasattr(act, "flush"):
                act.flush()
            graph_close = getattr(self.graph, "close", None)  # a projected graph closes the driver it built
            if graph_close is not None:
                graph_close()
            self.store.close()
            index_close = getattr(self.index, "close", None)
            if index_close is not None:
                index_close()
        finally:
            if self._hold is not None:
                self._hold.release()

    def __enter__(self) -> MemCube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemCube(cube_id={self.cube_id!r}, path={str(self.path)!r})"


def read_header(path: Path, *, verify: bool = True) -> dict[str, Any]:
    """The parsed ``cube.json`` of the cube at ``path``; with ``verify``, the database is checked too.

    A folder a dump left incomplete, a header that is not one, and a ``memory.db`` that is empty,
    truncated or garbled are :class:`CubeCorruptedError` here, before anything opens them for writing.
    """
    if (path / INCOMPLETE_FILE).exists():
        raise CubeCorruptedError(
            f"{path} is an incomplete dump (the copy stopped before it finished); delete it and dump the "
            "cube again")
    file = path / CUBE_FILE
    if not path.is_dir() or not file.exists():
        raise CubeNotFoundError(f"no cube at {path}; create one with MemCube.init_from_dir({str(path)!r})")
    try:
        header = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(header, dict) or not {"format_version", "embedder", "config"} <= set(header):
            raise ValueError("missing keys")
        emb = header["embedder"]
        if not isinstance(header["format_version"], int) or not isinstance(emb, dict) or not (
            isinstance(emb.get("name"), str) and isinstance(emb.get("dimension"), int) and isinstance(emb.get("fingerprint"), str)
        ):
            raise ValueError("format_version must be an integer and embedder must record name, dimension, fingerprint")
        if header["format_version"] > FORMAT_VERSION:
            raise CubeCorruptedError(f"{file} was written by a newer memos-integrations; upgrade the package")
    except (ValueError, OSError, RecursionError) as exc:
        raise CubeCorruptedError(f"{file} is not a valid cube header ({exc}); restore it from a dump") from exc
    if verify:
        check_database(path / "memory.db")
    return header


def own_folder(cube_path: str | Path, name: str) -> Path:
    """``<cube>/<name>`` (``kv``, ``adapters``), refused if it is a link: caches are spilled, evicted
    and loaded there, and a cube folder from someone else must not send those reads, writes and
    deletes to a folder outside it."""
    folder = Path(cube_path) / name
    if folder.is_symlink():
        raise CubeCorruptedError(
            f"{folder} is a link to {os.readlink(folder)!r}; a cube keeps its {name} inside its own folder: "
            "delete the link (a real folder is made when needed)")
    return folder


def _hold(path: Path, config: CubeConfig) -> CubeHold | None:
    """This process's exclusive hold on an embedded cube (None: vectors on a server, shareable)."""
    return CubeHold(path) if config.vector.mode == "persistent" else None


def check_database(db: Path) -> None:
    """Refuse an empty, truncated or garbled ``memory.db`` (absent is the caller's concern); see
    :meth:`~memos_integrations.storage.sqlite.SQLiteStore.check_file`."""
    SQLiteStore.check_file(db)
