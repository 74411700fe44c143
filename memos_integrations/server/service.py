"""What the routes do, over MOS, for one authenticated principal: the service's logic without HTTP.

Access is MOS's to decide (:meth:`MOS.cube` hands out a view that re-checks on every call and audits
refusals); this module only maps a principal to the MOS user it acts as, picks the cube a request means,
and hides what another user has: a cube the caller cannot reach at all answers exactly as a cube that
does not exist (404 ``CubeNotFoundError``, same message), and an item is only ever looked up in a cube
the caller reaches, so a foreign item id is "not found" too.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
import threading
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from ..access import deny, normalize_id
from ..errors import AccessDeniedError, ConflictError, InvalidInputError, MemosError
from ..items import MemoryItem, SearchHit
from ..mos import MOS, safe_name
from ..mos_view import CubeView
from ..storage.keys import KeyStore
from .auth import Principal
from .reach import guard

T = TypeVar("T")


_ITEM_FIELDS = tuple(f.name for f in fields(MemoryItem))
#: the fields that may hold a datetime or an enum (the others are strings, numbers, lists and dicts)
_CONVERTED = tuple(f.name for f in fields(MemoryItem) if "datetime" in str(f.type) or f.name in ("kind", "state"))


def item_json(item: MemoryItem) -> dict[str, Any]:
    """Exactly :meth:`MemoryItem.to_dict`, without ``asdict``'s deep copy (a third of a search's HTTP overhead).

    The item's own ``__dict__`` copied (its keys are the fields, in order, unless something set another
    attribute on it) with the time and enum fields converted: half the CPU of reading every field.
    """
    out = dict(item.__dict__)
    if tuple(out) == _ITEM_FIELDS:
        for name in _CONVERTED:
            value = out[name]
            if isinstance(value, datetime):
                out[name] = value.isoformat()
            elif isinstance(value, Enum):
                out[name] = value.value
        return out
    out = {}
    for name in _ITEM_FIELDS:
        value = getattr(item, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Enum):
            value = value.value
        out[name] = value  # lists and dicts are only read by the JSON encoder, never changed
    return out


def hit_json(hit: SearchHit) -> dict[str, Any]:
    return {"item": item_json(hit.item), "score": float(hit.score), "ranks": dict(hit.ranks)}


def default_cube_name(user: str) -> str:
    """``<user>_default`` when that is a safe cube name, else one derived from a hash of the user id."""
    name = f"{user}_default"
    try:
        return safe_name(name)
    except InvalidInputError:
        return "u" + hashlib.sha256(user.encode()).hexdigest()[:16] + "_default"


def embed_process_default() -> bool:
    """Whether ``memcube serve`` embeds in a child process unless told (``--embed-process``): where torch is
    installed.

    The child takes the embedding's Python glue off the requests' GIL: on the quiet 2-core development
    machine, 50 users at 200 offered searches/s, one process served 124-133 searches/s and the child
    162-181/s (docs/service.md), for about 365 MiB more memory. When the machine is saturated by other
    work the gain disappears (CPU, not the GIL, is then the limit). Only the torch backend gains: numpy's
    pass is a few large BLAS calls.
    """
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def serving_embedder(home: str | Path, query_precision: str = "auto", embed_process: bool = False) -> Any:
    """The embedder a served home's MOS opens its cubes with (what ``memcube serve`` passes to ``MOS``).

    MiniLM with batched query embeddings (:func:`memos_integrations.textual.batching.batched`: concurrent
    searches share one forward pass, which halves a query embedding's CPU and cut a search's by 20-31%
    under load) when every cube the home
    registers was built with MiniLM, which the service's new cubes are too. None when any was built
    with another embedder: each cube then opens the one its config names, unbatched, as before.

    Queries are embedded in ``query_precision`` (``memcube serve --query-precision``): ``auto`` by default,
    int8 where this CPU's int8 product is measured cheaper than fp32 (CPUs with VNNI: half a query's CPU at
    cosine 0.9985+ to fp32, docs/core.md "int8 queries"), fp32 elsewhere (an AVX2-only CPU: an int8 query cost
    ~15x fp32's); stored vectors stay fp32.

    ``embed_process`` (``memcube serve --embed-process``, its default where torch is installed): the batched
    embeddings (queries, one-text adds) run in a child process
    (:mod:`memos_integrations.textual.embed_process`), off the serving process's GIL; it is started and
    loaded here, before the first request, and stops when the returned embedder is closed.

    It is a token source for the ``late`` preset (:mod:`.late_embed`): adds keep their token vectors, and a
    late search embeds its query in fp32 with its token vectors (docs/service.md, "late in the service").

    Raises:
        BackendError: ``embed_process`` and the child could not start (the reason, and what to do).
    """
    from ..cube import read_header
    from ..storage.sql import SQLiteDatabase
    from ..storage.tables.registry import Registry
    from ..textual.embed import MiniLMEmbedder

    registry = Path(home) / "mos.db"
    recorded = []
    if registry.exists():
        db = SQLiteDatabase(registry)
        try:
            rows = Registry(db, str(registry)).cubes()
        finally:
            db.close()
        for _cube_id, path in rows:
            try:
                recorded.append(read_header(Path(path), verify=False)["embedder"])
            except MemosError:
                continue  # a missing or broken cube answers its own error when a request opens it
    if any(r.get("name") != MiniLMEmbedder.name for r in recorded):
        return None
    minilm = MiniLMEmbedder(query_precision=query_precision)
    process = None
    if embed_process:
        from ..textual.embed_process import EmbedProcess

        # one torch thread: its batches are small (a few queries, one-text adds), where a second OpenMP thread
        # doubles the CPU of a one-text add (20.8 vs 9.8 ms on the 2-core machine) and gains no wall time; the
        # vectors are the same bits (512 LoCoMo turns in batches of 64 at 1 and 2 threads: max difference 0)
        process = EmbedProcess.like(minilm, threads=1)
        process.launch()  # it loads torch and the model while this process does the same below
    try:
        if any(r.get("fingerprint") != minilm.fingerprint for r in recorded):
            if process is not None:
                process.close()
            return None
        minilm.query_precision_in_use  # noqa: B018  # prepares (and with auto measures) int8 now, not in the first search
        if process is not None:
            process.start()  # ready before the first request: a child that cannot start fails serve here
    except BaseException:
        if process is not None:
            process.close()
        raise
    from .late_embed import LateBatched

    return LateBatched(minilm, process)  # batched as batching.batched does, and a token source for `late`


_FIRST_WRITE = threading.Lock()  # REST and MCP in one process: two first writes make one cube


def default_cube(mos: MOS, user: str, *, create: bool, config: Any = None) -> str | None:
    """The cube a write lands in when none is named, for REST and MCP alike: the user's
    ``<user>_default``, else their only cube; with ``create``, a first write makes ``<user>_default``
    (with ``config``, a :class:`~memos_integrations.CubeConfig`, when given)."""
    owned = [c["cube_id"] for c in mos.list_cubes(user) if c["access"] == "owner"]
    name = default_cube_name(user)
    if name in owned:
        return name
    if len(owned) == 1:
        return owned[0]
    if owned:
        raise InvalidInputError(f"you own {len(owned)} cubes and none is {name!r}; name one with cube_id "
                                "(GET /v1/cubes lists them)")
    if not create:
        return None
    with _FIRST_WRITE:
        owned = [c["cube_id"] for c in mos.list_cubes(user) if c["access"] == "owner"]
        if owned:
            return owned[0]
        try:
            return mos.create_cube_for_user(name, owner_id=user, user_id=user, config=config)
        except (AccessDeniedError, InvalidInputError):
            # the name is another user's cube: take a fresh one rather than tell anyone about it
            return mos.create_cube_for_user(f"{name}_{secrets.token_hex(4)}", owner_id=user, user_id=user, config=config)


class Service:
    """The operations behind the routes. Thread-safe as MOS is; FastAPI runs each call in a worker thread."""

    def __init__(self, mos: MOS, keys: KeyStore, *, cube_config: Any = None, shared: bool = False) -> None:
        """``shared``: other processes serve the same home (``--workers``), so a new cube must be one they
        can open too: ``cube_config`` (a server-backed :class:`~memos_integrations.CubeConfig`) or none at all."""
        self.mos = mos
        self.keys = keys
        self.cube_config = cube_config
        self.shared = shared
        from ..cube import MemCube

        # the routes write through MOS's cube views, which pass keywords on to MemCube.add
        self.add_has_mode = "mode" in inspect.signature(MemCube.add).parameters

    # -- who acts --------------------------------------------------------------------------------
    def is_admin(self, user: str) -> bool:
        return any(u["user_id"] == user and u["role"] == "admin" for u in self.mos.list_users(user_id=user))

    def actor(self, principal: Principal, asked: str | None) -> str:
        """The MOS user a request acts as: the key's, or (for an admin's key only) the one it names."""
        user = principal.user_id
        wanted = normalize_id(asked) if asked is not None else None
        if wanted is None or wanted == user:
            return user
        if self.is_admin(user):
            return wanted
        raise deny(self.keys.audit, "act_as", user, wanted,
                   "this key acts only as its own user; leave user_id out, or use that user's own key",
                   {"key_id": principal.key_id})

    def agent(self, principal: Principal, asked: str | None) -> str | None:
        """The agent a write is filed under: an agent key's own agent, which no body may change."""
        if principal.agent_id is None:
            return asked
        if asked is not None and asked != principal.agent_id:
            raise deny(self.keys.audit, "act_as_agent", principal.user_id, asked,
                       "this key belongs to one agent; leave agent_id out, or use the other agent's key",
                       {"key_id": principal.key_id, "agent_id": principal.agent_id})
        return principal.agent_id

    # -- which cube ------------------------------------------------------------------------------
    def view(self, user: str, cube_id: str | None, need: str, *, create: bool = False) -> CubeView | None:
        """The cube a request means, checked by MOS for ``need``; None when the user has no default cube yet
        (and ``create`` is False).

        Raises:
            CubeNotFoundError: ``cube_id`` does not exist or the user cannot reach it (one answer for both).
            AccessDeniedError: the user reaches the cube, but with less than ``need`` (audited by MOS).
            InvalidInputError: no ``cube_id`` and the user owns several cubes, none of them the default.
        """
        if cube_id is None:
            cube_id = self.default_cube(user, create=create)
            if cube_id is None:
                return None
        return self.guard(user, cube_id, lambda: self.mos.cube(cube_id, user_id=user, access=need))  # type: ignore[arg-type]

    def guard(self, user: str, cube_id: str, call: Callable[[], T]) -> T:
        """Run a MOS call on ``cube_id``; a refusal on a cube the user cannot reach at all becomes "not found".

        :func:`.reach.guard` (shared with MCP): a cube the user cannot reach is refused before MOS touches it,
        from the registry alone, the same way whether it is another user's or does not exist (MOS would open
        the other user's cube and write into its audit log, which told a caller by timing which cube ids
        exist). The refusal is audited in the key store's log (``GET /v1/audit?scope=keys``) for both.
        """
        return guard(self.mos, user, cube_id, call, audit=self.keys.audit)

    def default_cube(self, user: str, *, create: bool) -> str | None:
        found = default_cube(self.mos, user, create=False)
        if found is not None or not create:
            return found
        return default_cube(self.mos, user, create=True, config=self.new_cube_config())

    def new_cube_config(self) -> Any:
        """The config for a cube this service creates (None: the default, embedded)."""
        if self.shared and self.cube_config is None:
            from .errors import UnsupportedError

            raise UnsupportedError("this service runs several worker processes and has nowhere to put a new cube that "
                                   "they can all open; ask the operator to start it with --cubes-on <PostgreSQL DSN>, "
                                   "or to create your cube for you")
        return self.cube_config

    def create_cube(self, user: str, cube_id: str) -> dict[str, str]:
        try:
            created = self.mos.create_cube_for_user(cube_id, owner_id=user, user_id=user, config=self.new_cube_config())
        except AccessDeniedError:
            raise ConflictError(f"the cube id {cube_id!r} is taken; choose another") from None
        return {"cube_id": created, "access": "owner"}


    # -- memory calls ----------------------------------------------------------------------------
    def principal_name(self, principal: Principal, user: str) -> str | None:
        """Who a write is recorded as: an agent key's ``agent:<id>``, else the user."""
        return f"agent:{principal.agent_id}" if principal.agent_id and user == principal.user_id else None
