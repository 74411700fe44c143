"""MOS, the memory operating system: users, cubes, sharing and access control over many cubes.

The registry (users, cubes, shares, and an audit log of user management) lives in ``<home>/mos.db``; each
cube stays a directory of its own. The rules, all decided through :mod:`memos_integrations.access`:

- **Every call names who acts**: ``user_id=...``, else the MOS's own user (``MOS(home, user_id=...)``).
  Nothing falls back to acting as a cube's owner; with neither, the call is refused.
- **A user reaches a cube** only if they own it or it was shared with them (``read`` or ``write``); an
  ``admin`` reaches every cube as its owner. Anything else raises :class:`AccessDeniedError` and is written
  to the cube's audit log.
- **A cube is its directory**, resolved (symlinks included): a directory registered once cannot be
  registered again under another id, nor can a new cube be put inside a registered one's directory.
- **Only an admin** creates admins, changes roles, or renames another user. Two calls need no actor:
  signing up a *new* plain user, and creating the *first* admin of a MOS that has none (bootstrap). A
  refusal is written to the MOS audit log (:meth:`MOS.audit_log`, for admins).
- :meth:`MOS.cube` hands out a :class:`~memos_integrations.mos_view.CubeView`, which re-checks access on
  every call: unsharing a cube takes effect on views handed out before.

Example:
    >>> import tempfile
    >>> mos = MOS(tempfile.mkdtemp())
    >>> mos.create_user("root", role="admin")  # bootstrap: the first admin needs no actor
    >>> mos.create_user("alice"); mos.create_user("bob")  # sign-up: new plain users need none either
    >>> cube_id = mos.create_cube_for_user("alice_notes", owner_id="alice")
    >>> _ = mos.add(memory_content="Alice's favourite tea is genmaicha.", mem_cube_id=cube_id, user_id="alice")
    >>> mos.search("what tea does Alice like?", user_id="alice")["text_mem"][0]["memories"][0].item.text
    "Alice's favourite tea is genmaicha."
    >>> mos.search("tea", user_id="bob")["text_mem"]
    []
    >>> mos.create_user("bob", role="admin")
    Traceback (most recent call last):
    ...
    memos_integrations.errors.AccessDeniedError: only an admin changes a user's role or another user's name; pass acting_user=<an admin>
    >>> mos.create_user("bob", role="admin", acting_user="root")
    >>> mos.close()
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

from .access import allows, check, deny, normalize_id
from .audit_fold import flush_folds
from .cube import MemCube
from .errors import (
    CubeNotFoundError,
    InvalidInputError,
    InvalidTypeError,
    UnknownUserError,
)
from .items import MemoryItem, SearchHit, from_epoch, to_epoch, utcnow
from .mos_view import CubeView
from .storage.sql import SQLiteDatabase, Tx
from .storage.tables.registry import Registry

Access = Literal["read", "write"]
Role = Literal["user", "admin"]

def safe_name(value: Any, what: str = "cube name") -> str:
    """A cube name or id that is safe as one path component: no separators, no ``..``, nothing invisible.

    >>> safe_name("alice_notes")
    'alice_notes'
    >>> safe_name("x/../alice_notes")
    Traceback (most recent call last):
    ...
    memos_integrations.errors.InvalidInputError: cube name 'x/../alice_notes' may not contain '/', '\\\\' or '..'; use a plain name such as 'alice_notes'
    """
    if not isinstance(value, str):
        raise InvalidTypeError(f"{what} must be a string, got {type(value).__name__}")
    if not value or value != value.strip() or value in (".", ".."):
        raise InvalidInputError(f"{what} {value!r} must be a non-empty name without surrounding spaces, not '.' or '..'")
    if "/" in value or "\\" in value or ".." in value:
        raise InvalidInputError(f"{what} {value!r} may not contain '/', '\\\\' or '..'; use a plain name such as 'alice_notes'")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in value) or len(value) > 128:
        raise InvalidInputError(f"{what} {value!r} must be at most 128 printable characters")
    return value


class MOS:
    """Orchestrates cubes across users. ``user_id`` on each call names the acting user (see the module docstring).

    Args:
        home: the directory holding ``mos.db`` and, by default, the cubes (``<home>/cubes/<name>``).
        user_id: the acting user for calls that name none (a user's own session).
        embedder: the embedder every cube is opened with.
        chat_model: the default model for :meth:`chat`.
        embedder_strict: False: ``embedder`` opens only the cubes built with it (same fingerprint); a cube
            built with another opens with the one its own config names, as with no ``embedder``. ``memcube
            serve`` uses it for its batched MiniLM, so a cube registered while it runs still opens.
    """

    def __init__(self, home: str | Path, *, user_id: str | None = None, embedder: Any = None, chat_model: Any = None,
                 reader: Any = None, embedder_strict: bool = True) -> None:
        self.home = Path(home)
        self.reader = reader  # an LLMReader for every cube this MOS opens (readers/); None: fast mode
        self.home.mkdir(parents=True, exist_ok=True)
        self.default_user = normalize_id(user_id)
        self.embedder = embedder
        self.embedder_strict = embedder_strict
        self.chat_model = chat_model
        self._lock = threading.RLock()
        self._closed = False
        db = SQLiteDatabase(self.home / "mos.db")
        try:
            self._reg = Registry(db, str(self.home / "mos.db"))
        except BaseException:
            db.close()
            raise
        self._cubes: dict[str, MemCube] = {}
        #: called with each cube this MOS opens, creates or registers, once it holds it (the service settles the GC
        #: there: server/gc_settle.py)
        self.on_open: Callable[[MemCube], None] | None = None

    # -- users ---------------------------------------------------------------------------------
    def create_user(
        self, user_id: str | int, name: str | None = None, role: Role | None = None, *, acting_user: str | int | None = None,
    ) -> None:
        """Create a user, or change an existing user's name or role.

        Who may: anyone signs up a *new* plain user; the first admin of a MOS without one needs no actor
        (bootstrap); every other admin, every role change and renaming another user need an admin. A user
        may rename themselves. Naming an existing user with nothing to change is a no-op.

        Args:
            user_id: the user to create or change (an int is its string).
            name: the display name; None keeps an existing user's name (a new user's is their id).
            role: ``"user"`` or ``"admin"``; None keeps an existing user's role (a new user is a ``"user"``).
            acting_user: who does it; defaults to the MOS's own user.

        Raises:
            AccessDeniedError: the change needs an admin and the actor is not one (audited in :meth:`audit_log`).
            UnknownUserError: ``acting_user`` names no user.
            InvalidInputError: an empty id or name, or an unknown role.
        """
        user = normalize_id(user_id)
        if user is None:
            raise InvalidInputError("user_id must be a non-empty string")
        if role is not None and role not in ("user", "admin"):
            raise InvalidInputError("role must be 'user' or 'admin'")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InvalidInputError("name must be a non-empty string, or None to keep the current one")
        actor = normalize_id(acting_user, "acting_user") if acting_user is not None else self.default_user
        refusal: tuple[str, str, dict[str, Any]] | None = None
        with self._tx() as tx:
            tx.lock("mos:users")
            if acting_user is not None and actor != user and self._role(actor, tx) is None:
                raise UnknownUserError(f"unknown acting_user {actor!r}; create it first with MOS.create_user({actor!r})")
            admin = self._role(actor, tx) == "admin"
            current = self._registry.user(tx, user)
            if current is None:
                new_role = role or "user"
                if new_role == "admin" and self._registry.has_admin(tx) and not admin:
                    refusal = ("create_user", "only an admin creates admins; pass acting_user=<an admin> "
                               "(only the first admin of a MOS needs none)", {"role": new_role})
                else:
                    self._registry.add_user(tx, user, name or user, new_role, to_epoch(utcnow()))
                    self._audit_write(tx, "create_user", actor, user, {"role": new_role, "bootstrap": new_role == "admin" and not admin})
            else:
                changes = {k: v for k, v, old in (("name", name, current[0]), ("role", role, current[1])) if v is not None and v != old}
                if changes and not admin and ("role" in changes or actor != user):
                    refusal = ("update_user", "only an admin changes a user's role or another user's name; "
                               "pass acting_user=<an admin>", changes)
                elif changes:
                    self._registry.update_user(tx, user, changes)
                    self._audit_write(tx, "update_user", actor, user, changes)
        if refusal is not None:  # audited after the transaction, so the refusal is kept
            action, message, detail = refusal
            raise deny(self._audit, action, actor, user, message, detail)

    def list_users(self, *, user_id: str | int | None = None) -> list[dict[str, Any]]:
        """Every user's id, name and role, for any known user (``user_id``, else the MOS's own)."""
        self._user(user_id)
        return [{"user_id": u, "name": n, "role": r} for u, n, r in self._registry.users()]

    def audit_log(self, *, user_id: str | int | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The MOS audit log (user management, and its refusals), newest first; only an admin reads it."""
        user = self._user(user_id)
        if self._role(user) != "admin":
            raise deny(self._audit, "audit_log", user, None, "only an admin reads the MOS audit log; pass user_id=<an admin>")
        rows = self._registry.audit_rows(limit)
        return [
            {"seq": r[0], "at": from_epoch(r[1]), "principal": r[2], "action": r[3], "target": r[4],
             "allowed": bool(r[5]), "detail": json.loads(r[6])}
            for r in rows
        ]

    # -- cubes -----------------------------------------------------------------------------------
    def create_cube_for_user(
        self, cube_name: str, owner_id: str | int, cube_path: str | Path | None = None, config: Any = None, *,
        user_id: str | int | None = None,
    ) -> str:
        """Create (or open) a cube directory and register it under ``cube_name``, owned by ``owner_id``.

        Args:
            cube_name: the cube id; a plain name (no ``/``, ``\\``, ``..``).
            owner_id: who will own it.
            cube_path: where; defaults to ``<home>/cubes/<cube_name>``. A directory that is, or lies inside
                or around, a registered cube's is refused.
            config: a :class:`~memos_integrations.CubeConfig` for a new cube.
            user_id: who does it; defaults to the MOS's own user, else the owner named by the call (creating
                a cube gives no one access to anything that exists). Another user than the owner must be an admin.

        Returns:
            The cube id.

        Raises:
            AccessDeniedError: the directory is another user's cube, or the actor may not create cubes for the owner.
            InvalidInputError: an unsafe name, or the owner's own cube under another id (the message names it).
        """
        name = safe_name(cube_name)
        owner = self._user(owner_id)
        actor = self._user(user_id) if user_id is not None else (self._user(None) if self.default_user else owner)
        if actor != owner and self._role(actor) != "admin":
            raise deny(self._audit, "create_cube", actor, name,
                       f"user {actor!r} may not create cubes for {owner!r}; only an admin acts for another user", {"owner": owner})
        path = Path(cube_path) if cube_path else self.home / "cubes" / name
        self._refuse_taken_id(name, path)
        existing = self._claim(path, name, owner, need="owner")
        if existing is not None:
            return existing
        cube = MemCube.init_from_dir(path, config, embedder=self.embedder, reader=self.reader)
        try:
            return self._insert(cube, name, owner)
        except BaseException:
            cube.close()
            raise

    def register_mem_cube(
        self, cube_or_path: MemCube | str | Path, user_id: str | int | None = None, mem_cube_id: str | None = None,
    ) -> str:
        """Register a cube (object or directory) under ``mem_cube_id``; a new cube is owned by ``user_id``.

        Registering a cube again under its own id is a no-op that needs read access; registering a
        registered directory under another id is refused (see :meth:`create_cube_for_user`).
        """
        user = self._user(user_id)
        given = isinstance(cube_or_path, MemCube)
        if not given and not isinstance(cube_or_path, (str, Path)):
            raise InvalidTypeError(f"register_mem_cube takes a MemCube or a directory, got {type(cube_or_path).__name__}")
        path = cube_or_path.path if isinstance(cube_or_path, MemCube) else Path(cube_or_path)
        if mem_cube_id is not None:
            safe_name(mem_cube_id, "mem_cube_id")
            self._refuse_taken_id(mem_cube_id, path)
        existing = self._claim(path, mem_cube_id, user, need="read")
        if existing is not None:
            return existing
        cube = cube_or_path if isinstance(cube_or_path, MemCube) else self._open_cube(path)
        try:
            cube_id = safe_name(mem_cube_id or cube.cube_id, "cube id")
            self._refuse_taken_id(cube_id, path)
            return self._insert(cube, cube_id, user)
        except BaseException:
            if not given:
                cube.close()
            raise

    def share_cube_with_user(
        self, cube_id: str, target_user_id: str | int, access: Access = "read", *, user_id: str | int | None = None,
    ) -> None:
        """Share a cube you own with another user (``read`` or ``write``); sharing again changes the level.

        The actor is ``user_id``, else the MOS's own user; with neither the call is refused (it never
        acts as the owner on its own).
        """
        actor = self._user(user_id)
        target = self._user(target_user_id)
        if access not in ("read", "write"):
            raise InvalidInputError("access must be 'read' or 'write'")
        cube = self._authorized(cube_id, actor, "owner", "share")
        self._registry.share(cube_id, target, access)
        cube.audit("share", actor, cube_id, {"with": target, "access": access})

    def unshare_cube(self, cube_id: str, target_user_id: str | int, *, user_id: str | int | None = None) -> None:
        """Take a share back; views handed out to that user lose access at their next call."""
        actor = self._user(user_id)
        target = normalize_id(target_user_id, "target_user_id")
        cube = self._authorized(cube_id, actor, "owner", "unshare")
        self._registry.unshare(cube_id, target)
        cube.audit("unshare", actor, cube_id, {"with": target})

    def list_cubes(self, user_id: str | int | None = None) -> list[dict[str, str]]:
        """The cubes ``user_id`` owns or was shared, with their access level."""
        user = self._user(user_id)
        return [{"cube_id": c, "access": a} for c, a in self._registry.reachable(user)]

    def cube(self, cube_id: str, *, user_id: str | int | None = None, access: Literal["read", "write", "owner"] = "read") -> CubeView:
        """A view of the cube for ``user_id``, after checking they have ``access`` now.

        The view re-checks on every call (read for reads, write for writes), so a later unshare or
        downgrade reaches it; it proxies to the one :class:`MemCube` this MOS keeps open.
        """
        user = self._user(user_id)
        if access not in ("read", "write", "owner"):
            raise InvalidInputError("access must be 'read', 'write' or 'owner'")
        self._authorized(cube_id, user, access, "open")
        return CubeView(self, cube_id, user)

    # -- memory operations ----------------------------------------------------------------------
    def add(
        self, messages: Sequence[Mapping[str, Any]] | None = None, memory_content: str | None = None, *,
        mem_cube_id: str | None = None, user_id: str | int | None = None, session_id: str | None = None, **kw: Any,
    ) -> list[MemoryItem]:
        """Add messages or a memory to ``mem_cube_id`` (default: the one cube the user owns), as ``user_id``.

        Args:
            messages: chat messages, read into one item each.
            memory_content: a memory text.
            mem_cube_id: the cube; needs write access.
            user_id: the acting user (default: the MOS's own); the memories belong to them.
            session_id: the session the memories came from.
            **kw: passed to :meth:`MemCube.add` (``timestamp``, ``kind``, ``tags``, ...).

        Returns:
            The items written.
        """
        taken = sorted({"messages", "memory", "principal"} & kw.keys())
        if taken:  # MemCube.add's own names: a TypeError from deep inside before
            raise InvalidInputError(f"MOS.add sets {', '.join(taken)} itself; pass the text as memory_content= "
                                    "and the messages as messages=")
        user = self._user(user_id)
        cube_id = mem_cube_id or self._default_cube(user)
        cube = self._authorized(cube_id, user, "write", "add")
        return cube.add(messages=messages, memory=memory_content, user_id=user, session_id=session_id, principal=user, **kw)

    def search(
        self, query: str, *, user_id: str | int | None = None, install_cube_ids: Sequence[str] | None = None, top_k: int = 10,
        **kw: Any,
    ) -> dict[str, list[dict[str, Any]]]:
        """Search every cube the user may read (or ``install_cube_ids``): results grouped by memory type.

        In a cube the user owns, every memory is searched; in a shared cube, too (sharing a cube shares
        its memories). ``act_mem`` lists the KV caches and ``para_mem`` the adapters the user has there.
        """
        user = self._user(user_id)
        cube_ids = list(install_cube_ids) if install_cube_ids is not None else [c["cube_id"] for c in self.list_cubes(user)]
        out: dict[str, list[dict[str, Any]]] = {"text_mem": [], "act_mem": [], "para_mem": []}
        for cube_id in cube_ids:
            cube = self._authorized(cube_id, user, "read", "search")
            hits: list[SearchHit] = cube.search(query, top_k=top_k, **kw)
            out["text_mem"].append({"cube_id": cube_id, "memories": hits})
            for slot, sub in (("act_mem", "kv"), ("para_mem", "adapters")):
                if (cube.path / sub).is_dir():
                    out[slot].append({"cube_id": cube_id, "memories": sorted(p.name for p in (cube.path / sub).iterdir())})
        return out

    def feedback(self, text: str, *, mem_cube_id: str | None = None, user_id: str | int | None = None, **kw: Any) -> list[MemoryItem]:
        """Correct the user's memories in words (``cube.feedback``): needs write access and a reader."""
        user = self._user(user_id)
        cube = self._authorized(mem_cube_id or self._default_cube(user), user, "write", "feedback")
        return cube.feedback(text, user_id=user, principal=user, **kw)

    def get(self, mem_cube_id: str, memory_id: str, *, user_id: str | int | None = None) -> MemoryItem:
        return self._authorized(mem_cube_id, self._user(user_id), "read", "get").get(memory_id)

    def get_all(self, mem_cube_id: str | None = None, *, user_id: str | int | None = None, **kw: Any) -> dict[str, list[dict[str, Any]]]:
        user = self._user(user_id)
        ids = [mem_cube_id] if mem_cube_id else [c["cube_id"] for c in self.list_cubes(user)]
        return {"text_mem": [{"cube_id": c, "memories": self._authorized(c, user, "read", "get_all").get_all(**kw)} for c in ids]}

    def update(self, mem_cube_id: str, memory_id: str, *, user_id: str | int | None = None, **changes: Any) -> MemoryItem:
        user = self._user(user_id)
        return self._authorized(mem_cube_id, user, "write", "update").update(memory_id, principal=user, **changes)

    def delete(self, mem_cube_id: str, memory_id: str | Sequence[str], *, user_id: str | int | None = None) -> int:
        user = self._user(user_id)
        return self._authorized(mem_cube_id, user, "write", "delete").delete(memory_id, principal=user)

    def chat(self, query: str, *, user_id: str | int | None = None, thread_id: str | None = None, top_k: int = 5, model: Any = None) -> str:
        """Answer with memories: retrieve from the user's cubes, then ask a LangChain chat model.

        ``model`` (or ``MOS(chat_model=...)``) is any LangChain ``BaseChatModel``: a hosted one, or
        ``memos_integrations.langchain.MemOSChatModel`` for a local model with KV-cache and adapter reuse.
        """
        model = model or self.chat_model
        if model is None:
            raise InvalidInputError("MOS.chat needs a chat model: MOS(..., chat_model=...) or chat(..., model=...)")
        user = self._user(user_id)
        config = {"configurable": {"user_id": user, "thread_id": thread_id or f"mos-{user}"}}
        if getattr(model, "cube", None) is not None:
            # a memory-aware model (MemOSChatModel) retrieves for itself and places memories where its
            # thread's KV cache stays reusable; a leading system message would break the cached prefix
            reply = model.invoke([("human", query)], config=config)
            return str(getattr(reply, "content", reply))
        found = self.search(query, user_id=user, top_k=top_k)
        hits = sorted((h for group in found["text_mem"] for h in group["memories"]), key=lambda h: -h.score)[:top_k]
        from .prompting import memory_system_prompt

        messages = [("system", memory_system_prompt([h.item for h in hits])), ("human", query)]
        reply = model.invoke(messages, config=config)
        return str(getattr(reply, "content", reply))

    def access_of(self, cube_id: str, user_id: str | int) -> str | None:
        """'owner', 'write', 'read' or None (an admin has 'owner' everywhere)."""
        user = normalize_id(user_id)
        if self._owner(cube_id) == user:
            return "owner"
        shared = self._registry.share_of(cube_id, user)
        if shared is not None:
            return shared
        return "owner" if self._role(user) == "admin" else None

    def close(self) -> None:
        try:
            if not self._closed:
                flush_folds(self)  # refusals counted but not yet written (audit_fold) reach the log first
        finally:
            self._close()

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for cube in self._cubes.values():
                cube.close()
            self._cubes.clear()
            self._reg.db.close()

    def __enter__(self) -> MOS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals: the registry ------------------------------------------------------------------
    @property
    def _registry(self) -> Registry:
        if self._closed:
            raise InvalidInputError("this MOS is closed; open the home again with MOS(home)")
        return self._reg

    def _tx(self) -> AbstractContextManager[Tx]:
        """One write transaction, taken up front so a check and the write it allows are atomic across processes."""
        return self._registry.transaction()

    def _audit_write(self, tx: Tx, action: str, principal: str | None, target: str | None, detail: Mapping[str, Any]) -> None:
        self._registry.audit((to_epoch(utcnow()), principal, action, target, 1, json.dumps(dict(detail), default=str)), tx)

    def _audit(self, action: str, principal: str | None, target: str | None,
               detail: Mapping[str, Any] | None = None, allowed: bool = True) -> None:
        """The MOS audit sink (the shape :func:`access.deny` writes to), for user management."""
        self._registry.audit(
            (to_epoch(utcnow()), principal, action, target, int(allowed), json.dumps(dict(detail or {}), default=str)))

    def _user(self, user_id: str | int | None) -> str:
        user = normalize_id(user_id) if user_id is not None else self.default_user
        if user is None:
            raise InvalidInputError("no user: pass user_id=... or create MOS(..., user_id=...)")
        if self._role(user) is None:
            raise UnknownUserError(f"unknown user {user!r}; create it first with MOS.create_user({user!r})")
        return user

    def _role(self, user: str | None, tx: Tx | None = None) -> str | None:
        return None if user is None else self._registry.role(user, tx)

    def _owner(self, cube_id: str) -> str:
        found = self._registry.cube(cube_id)
        if found is None:
            raise CubeNotFoundError(f"no cube {cube_id!r} is registered; register it with MOS.register_mem_cube")
        return str(found[1])

    def _cube(self, cube_id: str) -> MemCube:
        """The open cube behind an id, with no access check: only for code that checks first."""
        if not isinstance(cube_id, str):
            raise InvalidTypeError(f"cube ids are strings, got {type(cube_id).__name__}")
        with self._lock:
            if cube_id not in self._cubes:
                found = self._registry.cube(cube_id)
                if found is None:
                    raise CubeNotFoundError(f"no cube {cube_id!r} is registered; register it with MOS.register_mem_cube")
                self._cubes[cube_id] = self._open_cube(found[0])
                if self.on_open is not None:
                    self.on_open(self._cubes[cube_id])
            return self._cubes[cube_id]

    def _open_cube(self, path: str | Path) -> MemCube:
        """Open a cube with ``self.embedder``, or (not ``embedder_strict``) with its own when built with another."""
        embedder = self.embedder
        if embedder is not None and not self.embedder_strict:
            from .cube import read_header

            recorded = read_header(Path(path), verify=False)["embedder"]
            if recorded.get("fingerprint") != embedder.fingerprint or recorded.get("dimension") != embedder.dimension:
                embedder = None
        return MemCube.open(path, embedder=embedder, reader=self.reader)

    def _authorized(self, cube_id: str, user: str, need: str, action: str) -> MemCube:
        """The cube, if ``user`` has ``need`` on it now; else an audited :class:`AccessDeniedError`."""
        cube = self._cube(cube_id)
        have = self.access_of(cube_id, user)
        check(have, need, audit=cube.audit, action=action, principal=user, target=cube_id,
              message=f"user {user!r} may not {action} cube {cube_id!r} (needs {need}, has {have or 'no access'}); "
                      "ask its owner to share it with MOS.share_cube_with_user")
        return cube

    def _default_cube(self, user: str) -> str:
        owned = self._registry.owned(user)
        if len(owned) != 1:
            raise InvalidInputError(f"user {user!r} owns {len(owned)} cubes; name one with mem_cube_id=")
        return owned[0]

    def _refuse_taken_id(self, cube_id: str, path: Path) -> None:
        found = self._registry.cube(cube_id)
        if found is not None and Path(found[0]).resolve() != path.resolve():
            raise InvalidInputError(f"cube id {cube_id!r} is already registered for another directory; pass another mem_cube_id")

    def _claim(self, path: Path, cube_id: str | None, user: str, *, need: str) -> str | None:
        """Check a directory against every registered cube's: a cube is its directory, resolved.

        Returns the existing id when ``path`` is that cube asked for under its own id (or no id) and the
        user has ``need`` on it; None when the directory touches no registered cube. Otherwise refuses: a
        clear :class:`InvalidInputError` naming the cube to whoever owns it, an audited
        :class:`AccessDeniedError` to anyone else.
        """
        resolved = path.resolve()
        for registered_id, registered in self._registry.cubes():
            theirs = Path(registered).resolve()
            same = resolved == theirs
            if not (same or resolved.is_relative_to(theirs) or theirs.is_relative_to(resolved)):
                continue
            if same and cube_id in (None, registered_id):
                self._authorized(registered_id, user, need, "register")
                return str(registered_id)
            cube = self._cube(registered_id)
            if allows(self.access_of(registered_id, user), "owner"):
                where = "is" if same else ("lies inside" if resolved.is_relative_to(theirs) else "holds")
                raise InvalidInputError(
                    f"{resolved} {where} the directory of the cube already registered as {registered_id!r}; "
                    f"use mem_cube_id={registered_id!r}, or choose a directory outside every registered cube"
                )
            raise deny(cube.audit, "register", user, registered_id,
                       f"{resolved} is already registered as another user's cube (or lies inside or around one); "
                       "ask its owner to share it with MOS.share_cube_with_user",
                       {"as": cube_id, "path": str(resolved)})
        return None

    def _insert(self, cube: MemCube, cube_id: str, owner: str) -> str:
        """Register ``cube`` under ``cube_id``; the checks are repeated inside the write transaction."""
        resolved = str(cube.path.resolve())
        with self._tx() as tx:
            if not self._registry.add_cube(tx, cube_id, resolved, owner):
                raise InvalidInputError(f"cube {cube_id!r} or directory {resolved} was registered meanwhile; try again")
        cube.audit("register", owner, cube_id, {"owner": owner})
        self._cubes[cube_id] = cube
        if self.on_open is not None:  # held from now on, as a cube opened from the registry is
            self.on_open(cube)
        return cube_id

