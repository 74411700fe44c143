"""MemOSSaver: LangGraph thread state (checkpoints and pending writes) kept in a cube's database.

Where it sits: the LangGraph face's ``BaseCheckpointSaver``. Checkpoints live in the cube's database
(``<cube>/memory.db``) beside the cube's memories (tables ``lg_checkpoints``, ``lg_writes``,
``lg_threads``), so one file holds a user's threads and long-term memory, and a cube dump or clone
carries both. Every statement on those tables is in :mod:`memos_integrations.storage.tables.checkpoints`;
this module decides who may act and (de)serialises.

Serialisation: LangGraph's own serializer (``JsonPlusSerializer``: msgpack, no pickle fallback) or any
``SerializerProtocol`` passed as ``serde=``, e.g. an ``EncryptedSerializer``. A pickle-enabled
serializer is refused, and a stored type the serializer cannot read raises
:class:`CheckpointSerdeError` instead of LangGraph's bare ``NotImplementedError``.

Who is acting: the user of a call is resolved by :func:`memos_integrations.access.resolve_scope`, in the
order the saver's binding (``MemOSSaver(cube, user_id=...)`` / ``saver.for_user(...)``) > the run's
``context=`` > ``config["configurable"]["user_id"]`` (an int id is its string). Calls that take no config
(``copy_thread``, ``delete_thread``, ``prune``, ``delete_for_runs``, ``list(None)``) use the binding, or
the run they are made in.

Governance: the first write with a user records them as the thread's owner; every operation with a
user checks it: another user's reads, writes, copies, prunes and deletions of that thread are refused,
``list`` returns only the user's threads, and the configs the saver hands back keep the ``user_id`` (so
replaying from ``get_state_history`` still knows who is acting). With ``require_user=True`` a call
without a user is refused. ``MemOSSaver.from_mos`` always requires a user and checks their access to
the cube through ``MOS``. Every refusal is audited in the cube; no error names another user.

Sync/async policy: the core is synchronous; every ``a*`` method runs its sync twin in a worker thread
(:func:`memos_integrations.aio.in_thread`), so the event loop never blocks on the database.
:class:`AsyncMemOSSaver` (made inside a running loop) refuses a sync call from that loop's thread, as
LangGraph's ``AsyncSqliteSaver`` does.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from ..access import deny, normalize_id, resolve_scope
from ..aio import in_thread, refuse_on_loop
from ..errors import AccessDeniedError, InvalidInputError
from ..face_api import CubeAPI, as_cube
from ..items import to_epoch, utcnow
from ..storage.tables.checkpoints import CheckpointTables
from .access import current_config
from .errors import CheckpointSerdeError, ThreadNotFoundError

#: (user_id, need) -> None, raising AccessDeniedError; ``need`` is "read" or "write"
Authorize = Callable[[str, str], None]


class MemOSSaver(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer storing thread state in a MemCube (sync and async).

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langgraph]'

    Instantiate:
        >>> import tempfile
        >>> from memos_integrations import MemCube
        >>> from memos_integrations.langgraph import MemOSSaver
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> saver = MemOSSaver(cube)          # or: with MemOSSaver.from_conn_string(path) as saver: ...

    Usage:
        >>> from langgraph.graph import StateGraph, START, END
        >>> builder = StateGraph(int)
        >>> _ = builder.add_node("inc", lambda x: x + 1)
        >>> _ = builder.add_edge(START, "inc"); _ = builder.add_edge("inc", END)
        >>> graph = builder.compile(checkpointer=saver)
        >>> graph.invoke(1, {"configurable": {"thread_id": "t1", "user_id": "alice"}})
        2
        >>> graph.get_state({"configurable": {"thread_id": "t1"}}).values
        2
        >>> saver.copy_thread("t1", "t2"); saver.prune(["t1"]); saver.delete_thread("t2")
        >>> cube.close()

    Async: ``aput``, ``aget_tuple``, ``alist``, ... run the same code in a worker thread.
    """

    def __init__(
        self, cube: Any, *, serde: SerializerProtocol | None = None, authorize: Authorize | None = None,
        user_id: str | int | None = None, require_user: bool = False,
    ) -> None:
        """Args:
            cube: the cube whose database keeps the threads.
            serde: a serializer without pickle (default ``JsonPlusSerializer``; ``EncryptedSerializer`` fits).
            authorize: ``(user_id, "read" | "write")`` -> None or raise, run for every call with a user.
            user_id: bind the saver to one user: every call acts for them, a run naming another is refused.
            require_user: refuse (audited) every call that does not say which user it acts for.

        Raises:
            InvalidInputError: a pickle-enabled serializer.
            InvalidTypeError: ``cube`` is not a cube.
        """
        if getattr(serde, "pickle_fallback", False) or getattr(getattr(serde, "serde", None), "pickle_fallback", False):
            raise InvalidInputError(
                "this saver never stores pickle: pass a serializer without pickle_fallback "
                "(the default JsonPlusSerializer, or EncryptedSerializer around it)"
            )
        super().__init__(serde=serde or JsonPlusSerializer())
        self.cube: CubeAPI = as_cube(cube, "MemOSSaver")
        self.tables = CheckpointTables(self.cube.store.db)
        self.authorize = authorize
        self.user_id = normalize_id(user_id)
        self.require_user = bool(require_user)
        self.loop: asyncio.AbstractEventLoop | None = None  # set by AsyncMemOSSaver
        self.setup()

    def for_user(self, user_id: str | int) -> MemOSSaver:
        """A saver over the same cube bound to ``user_id`` (same serializer, authorisation and strictness)."""
        bound = type(self).__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound.user_id = normalize_id(user_id)
        if bound.user_id is None:
            raise InvalidInputError("for_user needs a user id")
        return bound

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    @contextmanager
    def from_conn_string(
        cls, path: str | Path, *, embedder: Any = None, serde: SerializerProtocol | None = None,
        require_user: bool = False,
    ) -> Iterator[MemOSSaver]:
        """Open (or create) the cube directory at ``path`` and yield a saver over it; closes the cube after."""
        from ..cube import MemCube

        cube = MemCube.init_from_dir(path, embedder=embedder)
        try:
            yield cls(cube, serde=serde, require_user=require_user)
        finally:
            cube.close()

    @classmethod
    def from_mos(cls, mos: Any, cube_id: str, *, serde: SerializerProtocol | None = None) -> MemOSSaver:
        """A saver over a cube registered in ``mos``: every call needs a user with access to that cube
        (a call without one is refused, never let through unchecked)."""
        def authorize(user_id: str, need: str) -> None:
            mos.cube(cube_id, user_id=user_id, access=need)

        return cls(mos._cube(cube_id), serde=serde, authorize=authorize, require_user=True)

    def setup(self) -> None:
        """Bring the checkpoint tables up to date (idempotent; run by the constructor)."""
        self.tables.ready()

    # -- who is acting ----------------------------------------------------------------------------
    def _user(self, config: RunnableConfig | None, need: str, what: str, target: str) -> str | None:
        """The user this call acts for (binding > run context > configurable), authorised for ``need``.

        Raises:
            AccessDeniedError: no user while ``require_user``; the run names another user than the
                binding; ``authorize`` refuses (each audited).
        """
        if self.loop is not None:  # AsyncMemOSSaver: no blocking call from its own loop's thread
            refuse_on_loop(self.loop, f"MemOSSaver.{what}")
        if config is None:
            config = current_config()
        scope = resolve_scope(bound={"user_id": self.user_id} if self.user_id else None, config=config,
                              audit=self.cube.audit, what="this saver", fields=("user_id",))
        user = scope.user_id
        if user is None:
            if self.require_user:
                raise deny(self.cube.audit, f"checkpoint_{need}", None, target,
                           f"{what} needs a user (this saver requires one): pass config={{'configurable': "
                           "{'user_id': ...}}, context={'user_id': ...}, or use saver.for_user(user_id)")
            return None
        if self.authorize is not None:
            try:
                self.authorize(user, need)
            except AccessDeniedError as exc:
                raise deny(self.cube.audit, f"checkpoint_{need}", user, target, str(exc)) from None
        return user

    def _config(self, thread_id: str, ns: str, checkpoint_id: str, user: str | None) -> RunnableConfig:
        """A config the saver hands back: it keeps the user, so replaying from it still knows who acts."""
        conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}
        if user is not None:
            conf["user_id"] = user
        return {"configurable": conf}

    # -- reads ----------------------------------------------------------------------------------
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = _configurable(config)
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "") or ""
        user = self._user(config, "read", "get_tuple", f"thread:{thread_id}")
        rows = self.tables.get(thread_id, ns, get_checkpoint_id(config), with_owner=user is not None)
        if not rows:
            if user is not None:  # no checkpoint, but the thread may still belong to someone else
                self._check_owner(user, thread_id, self.tables.owner(thread_id), "read")
            return None
        first = rows[0]
        if user is not None:
            self._check_owner(user, thread_id, first[11], "read")
        cid, parent_id, type_, blob, metadata = first[:5]
        return CheckpointTuple(
            self._config(thread_id, ns, cid, user),
            self._loads(type_, blob, "checkpoint", cid), json.loads(metadata),
            self._config(thread_id, ns, parent_id, user) if parent_id else None,
            self._pending([r[5:11] for r in rows]) if first[5] is not None else [],
        )

    def list(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints, newest first; with a user, only that user's threads (another's thread is refused)."""
        conf = (config or {}).get("configurable") or {}
        thread_id = None if conf.get("thread_id") in (None, "") else str(conf["thread_id"])
        user = self._user(config, "read", "list", f"thread:{thread_id}" if thread_id else "threads")
        if thread_id is not None and user is not None:
            self._check_owner(user, thread_id, self.tables.owner(thread_id), "read")
        rows = self.tables.select(
            thread_id=thread_id, owner=user, ns=conf.get("checkpoint_ns"), checkpoint_id=conf.get("checkpoint_id") or None,
            metadata=filter, before=(get_checkpoint_id(before) or None) if before is not None else None, limit=limit,
        )
        groups: dict[tuple[str, str, str], builtins.list[tuple[Any, ...]]] = {}
        for row in rows:
            groups.setdefault((row[0], row[1], row[2]), []).append(row)
        # newest first (a stable sort of the few chosen checkpoints, cheaper than a second SQL sort of the joined rows)
        for group in sorted(groups.values(), key=lambda g: g[0][2], reverse=True):
            yield self._tuple(group, user)  # decoded one at a time, as the caller iterates

    def _tuple(self, rows: Sequence[tuple[Any, ...]], user: str | None) -> CheckpointTuple:
        """One checkpoint from its ``_LIST_HEAD`` rows (its columns, then a pending write's or NULLs)."""
        thread_id, ns, cid, parent_id, type_, blob, metadata = rows[0][:7]
        return CheckpointTuple(
            self._config(thread_id, ns, cid, user),
            self._loads(type_, blob, "checkpoint", cid), json.loads(metadata),
            self._config(thread_id, ns, parent_id, user) if parent_id else None,
            self._pending([r[7:] for r in rows]) if rows[0][7] is not None else [],
        )

    def _pending(self, rows: Sequence[tuple[Any, ...]]) -> builtins.list[PendingWrite]:
        """(task_id, task_path, idx, channel, type, value) rows as pending writes, in ``writes_sort_key`` order."""
        return [(task_id, channel, self._loads(type_, value, "write of task", task_id))
                for task_id, _, _, channel, type_, value in sorted(rows, key=lambda r: writes_sort_key(r[1], r[0], r[2]))]

    def _loads(self, type_: str, blob: bytes | None, what: str, ident: str) -> Any:
        try:
            return self.serde.loads_typed((type_, blob if blob is not None else b""))
        except NotImplementedError as exc:  # LangGraph's serializer: unknown type tag
            raise CheckpointSerdeError(
                f"{what} {ident} was stored as {type_!r}, which this saver's serializer cannot read ({exc}); "
                "open the saver with the serializer that wrote it (e.g. the same EncryptedSerializer); "
                "pickle is never loaded"
            ) from None

    # -- writes ---------------------------------------------------------------------------------
    def put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions,
    ) -> RunnableConfig:
        conf = _configurable(config)
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "") or ""
        user = self._user(config, "write", "put", f"thread:{thread_id}")
        type_, blob = self._dumps(checkpoint)
        md = get_serializable_checkpoint_metadata(config, metadata)
        try:
            md_json = json.dumps(md, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None
        run_id = md.get("run_id")
        with self._tx() as (c, audit):  # owner check and row write commit together
            self._claim(c, user, thread_id, audit)
            self.tables.put(c, (thread_id, ns, checkpoint["id"], conf.get("checkpoint_id"), type_, blob, md_json,
                                None if run_id is None else str(run_id), to_epoch(utcnow())))
        return self._config(thread_id, ns, checkpoint["id"], user)

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        conf = _configurable(config)
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "") or ""
        checkpoint_id = conf.get("checkpoint_id")
        if not checkpoint_id:
            raise InvalidInputError("put_writes needs config['configurable']['checkpoint_id'] (the checkpoint the writes belong to)")
        user = self._user(config, "write", "put_writes", f"thread:{thread_id}")
        rows = [
            (thread_id, ns, str(checkpoint_id), task_id, task_path, WRITES_IDX_MAP.get(channel, idx), channel, *self._dumps(value))
            for idx, (channel, value) in enumerate(writes)
        ]
        # special channels (errors, interrupts) replace; regular writes are idempotent per (task, idx)
        with self._tx() as (c, audit):
            self._claim(c, user, thread_id, audit)
            self.tables.put_writes(c, rows, replace=all(w[0] in WRITES_IDX_MAP for w in writes))

    def _dumps(self, obj: Any) -> tuple[str, bytes]:
        type_, blob = self.serde.dumps_typed(obj)
        if type_.split("+")[0] == "pickle":
            raise InvalidInputError("the serializer produced pickle, which this saver never stores; disable pickle_fallback")
        return type_, blob

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread's checkpoints and writes; with a user, only a thread that is theirs (or nobody's)."""
        tid = str(thread_id)
        user = self._user(None, "write", "delete_thread", f"thread:{tid}")
        with self._tx() as (c, audit):
            self._owned(c, user, [tid], "delete", audit)
            self.tables.delete_threads(c, [tid])

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints written by ``run_ids`` (any thread, any namespace) and their writes;
        with a user, refused (nothing deleted) if any of them lies in another user's thread."""
        ids = [str(r) for r in run_ids]
        user = self._user(None, "write", "delete_for_runs", "runs")
        if not ids:
            return
        with self._tx() as (c, audit):
            self._owned(c, user, self.tables.run_threads(c, ids), "delete", audit)
            self.tables.delete_runs(c, ids)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint (all namespaces, the whole parent chain) and write of a thread to another id.

        With a user, the source must be theirs (or nobody's), the target must not be another user's,
        and the copy belongs to the user.
        """
        src, dst = str(source_thread_id), str(target_thread_id)
        user = self._user(None, "write", "copy_thread", f"thread:{src}")
        with self._tx() as (c, audit):
            self._owned(c, user, [src], "read", audit)
            self._owned(c, user, [dst], "write", audit)
            if not self.tables.has_checkpoints(c, src):
                raise ThreadNotFoundError(f"thread {src!r} has no checkpoints in cube {self.cube.cube_id!r}; nothing to copy")
            self.tables.copy(c, src, dst, user, to_epoch(utcnow()))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Drop old checkpoints: ``keep_latest`` keeps the newest per namespace, ``delete`` drops all.

        ``keep_latest`` is DeltaChannel-aware: it also keeps the ancestors (and their writes) that a
        kept checkpoint's delta channels still need, up to the nearest stored value of each. With a
        user, every thread must be theirs (or nobody's); otherwise nothing is pruned.
        """
        if strategy not in ("keep_latest", "delete"):
            raise InvalidInputError(f"unknown prune strategy {strategy!r}; use 'keep_latest' or 'delete'")
        threads = [str(t) for t in thread_ids]
        user = self._user(None, "write", "prune", "threads")
        with self._tx() as (c, audit):
            self._owned(c, user, threads, "prune", audit)
            if strategy == "delete":
                self.tables.delete_threads(c, threads)
                return
            by_thread: dict[str, builtins.list[tuple[Any, ...]]] = {}
            for row in self.tables.thread_checkpoints(c, threads):
                by_thread.setdefault(row[0], []).append(row[1:])
            doomed = []
            for thread_id, rows in by_thread.items():
                keep = _keep_for_prune(rows, lambda t, b: self._loads(t, b, "checkpoint", ""))
                doomed += [(thread_id, ns, cid) for ns, cid, *_ in rows if (ns, cid) not in keep]
            self.tables.delete_checkpoints(c, doomed)

    # -- access ---------------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[tuple[Any, Callable[..., None]]]:
        """A write transaction and an audit sink whose entries are written after it ends: a denial
        rolls the transaction back, and must not take its audit entry with it."""
        held: builtins.list[tuple[Any, ...]] = []

        def hold(action: str, principal: str | None, target: str | None, detail: Any = None, allowed: bool = True) -> None:
            held.append((action, principal, target, detail, allowed))

        try:
            with self.tables.transaction() as c:
                yield c, hold
        finally:
            for action, principal, target, detail, allowed in held:
                self.cube.audit(action, principal, target, detail, allowed=allowed)

    def _claim(self, c: Any, user: str | None, thread_id: str, audit: Callable[..., None]) -> None:
        """Inside a write transaction: refuse another user's thread; a user's first write makes it theirs."""
        if user is None:
            return
        owner = self.tables.claim(c, thread_id, user, to_epoch(utcnow()))
        if owner is not None:
            self._check_owner(user, thread_id, owner, "write", audit)

    def _owned(self, c: Any, user: str | None, thread_ids: Sequence[str], need: str, audit: Callable[..., None]) -> None:
        """Refuse (audited) if any of ``thread_ids`` belongs to another user than ``user``."""
        if user is not None and thread_ids and (found := self.tables.foreign(c, thread_ids, user)) is not None:
            self._check_owner(user, *found, need, audit)

    def _check_owner(self, user: str, thread_id: str, owner: str | None, need: str,
                     audit: Callable[..., None] | None = None) -> None:
        if owner is not None and owner != user:
            # the audit keeps the owner for whoever reviews it; the error names only the caller
            raise deny(
                audit or self.cube.audit, f"checkpoint_{need}", user, f"thread:{thread_id}",
                f"user {user!r} may not {need} thread {thread_id!r}: it belongs to another user; "
                "use your own thread_id, or have its owner copy the thread for you",
                {"owner": owner},
            )

    # -- async twins: the same work in a worker thread ----------------------------------------------
    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await in_thread(self.get_tuple, config)

    async def alist(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await in_thread(lambda: [*self.list(config, filter=filter, before=before, limit=limit)])
        for tup in found:
            yield tup

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await in_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "",
    ) -> None:
        await in_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await in_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await in_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await in_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await in_thread(lambda: self.prune(thread_ids, strategy=strategy))


class AsyncMemOSSaver(MemOSSaver):
    """:class:`MemOSSaver` for async applications: made inside the running event loop, it refuses a
    synchronous call from that loop's thread (which would stall every other task), as LangGraph's
    ``AsyncSqliteSaver`` does; the ``a*`` methods work as in :class:`MemOSSaver`.

    Example:
        >>> import asyncio, tempfile
        >>> from memos_integrations import MemCube
        >>> async def main() -> str:
        ...     cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        ...     saver = AsyncMemOSSaver(cube)
        ...     try:
        ...         saver.get_tuple({"configurable": {"thread_id": "t"}})
        ...     except InvalidInputError as exc:
        ...         return str(exc).split(";")[0]
        ...     finally:
        ...         cube.close()
        ...     return "not refused"
        >>> asyncio.run(main())
        'synchronous MemOSSaver.get_tuple called from the event loop this component runs on'
    """

    def __init__(self, cube: Any, **kwargs: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise InvalidInputError(
                "AsyncMemOSSaver is made inside a running event loop (async code); use MemOSSaver elsewhere"
            ) from None
        super().__init__(cube, **kwargs)
        self.loop = loop

    @classmethod
    @asynccontextmanager
    async def afrom_conn_string(
        cls, path: str | Path, *, embedder: Any = None, serde: SerializerProtocol | None = None,
        require_user: bool = False,
    ) -> AsyncIterator[AsyncMemOSSaver]:
        """Open (or create) the cube at ``path`` in a worker thread and yield an async saver; closes it after."""
        from ..cube import MemCube

        cube = await in_thread(MemCube.init_from_dir, path, embedder=embedder)
        try:
            yield cls(cube, serde=serde, require_user=require_user)
        finally:
            await in_thread(cube.close)


def _configurable(config: RunnableConfig) -> dict[str, Any]:
    conf = (config or {}).get("configurable")
    if not isinstance(conf, dict) or conf.get("thread_id") in (None, ""):
        raise InvalidInputError(
            "the config needs a thread id: {'configurable': {'thread_id': '...'}} "
            "(LangGraph checkpointers key state by thread)"
        )
    return conf


def _keep_for_prune(rows: Sequence[tuple[Any, ...]], loads: Callable[[str, bytes], Any]) -> set[tuple[str, str]]:
    """Which (namespace, checkpoint id) survive ``keep_latest``: the newest per namespace, plus the
    ancestors its delta channels (those counted in ``counters_since_delta_snapshot``) still replay from."""
    by_key = {(ns, cid): (parent, type_, blob, md) for ns, cid, parent, type_, blob, md in rows}
    keep: set[tuple[str, str]] = set()
    seen_ns: set[str] = set()
    for ns, cid, *_ in rows:  # newest first within each namespace
        if ns in seen_ns:
            continue
        seen_ns.add(ns)
        key: tuple[str, str] | None = (ns, cid)
        needed: set[str] | None = None
        while key is not None and key in by_key:
            keep.add(key)
            parent, type_, blob, md = by_key[key]
            counters = json.loads(md).get("counters_since_delta_snapshot") or {}
            if needed is None:
                needed = set(counters)
            if not needed:
                break
            needed -= set(loads(type_, blob).get("channel_values", {}))
            key = (ns, parent) if parent and needed else None
    return keep
