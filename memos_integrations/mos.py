"""MOS, the memory operating system: users, cubes, sharing and access control over many cubes.

The registry (users, cubes, shares) lives in ``<home>/mos.db``; each cube stays a directory of its
own. A user reaches a cube only if they own it or it was shared with them (``read`` or ``write``);
anything else raises :class:`AccessDeniedError` and is written to the cube's audit log.

Example:
    >>> import tempfile
    >>> mos = MOS(tempfile.mkdtemp())
    >>> mos.create_user("alice"); mos.create_user("bob")
    >>> cube_id = mos.create_cube_for_user("alice_notes", owner_id="alice")
    >>> _ = mos.add(memory_content="Alice's favourite tea is genmaicha.", mem_cube_id=cube_id, user_id="alice")
    >>> mos.search("what tea does Alice like?", user_id="alice")["text_mem"][0]["memories"][0].item.text
    "Alice's favourite tea is genmaicha."
    >>> mos.search("tea", user_id="bob")["text_mem"]
    []
    >>> mos.close()
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .cube import MemCube
from .errors import AccessDeniedError, CubeNotFoundError, InvalidInputError, InvalidTypeError, UnknownUserError
from .items import MemoryItem, SearchHit, to_epoch, utcnow

Access = Literal["read", "write"]
_RANK = {"read": 1, "write": 2, "owner": 3}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, name TEXT, role TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cubes (cube_id TEXT PRIMARY KEY, path TEXT NOT NULL, owner TEXT NOT NULL REFERENCES users(user_id));
CREATE TABLE IF NOT EXISTS shares (
    cube_id TEXT NOT NULL REFERENCES cubes(cube_id), user_id TEXT NOT NULL REFERENCES users(user_id),
    access TEXT NOT NULL, PRIMARY KEY (cube_id, user_id)
);
"""


class MOS:
    """Orchestrates cubes across users. ``user_id`` on each call names the acting user."""

    def __init__(self, home: str | Path, *, user_id: str | None = None, embedder: Any = None, chat_model: Any = None) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.default_user = user_id
        self.embedder = embedder
        self.chat_model = chat_model
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.home / "mos.db"), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._cubes: dict[str, MemCube] = {}

    # -- users ---------------------------------------------------------------------------------
    def create_user(self, user_id: str, name: str | None = None, role: Literal["user", "admin"] = "user") -> None:
        if not isinstance(user_id, str) or not user_id.strip():
            raise InvalidInputError("user_id must be a non-empty string")
        if role not in ("user", "admin"):
            raise InvalidInputError("role must be 'user' or 'admin'")
        with self._lock:
            self._db.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET name=excluded.name, role=excluded.role",
                (user_id, name or user_id, role, to_epoch(utcnow())),
            )

    def list_users(self) -> list[dict[str, Any]]:
        rows = self._q("SELECT user_id, name, role FROM users ORDER BY user_id")
        return [{"user_id": u, "name": n, "role": r} for u, n, r in rows]

    def _user(self, user_id: str | None) -> str:
        user_id = user_id or self.default_user
        if user_id is None:
            raise InvalidInputError("no user: pass user_id=... or create MOS(..., user_id=...)")
        if not self._q("SELECT 1 FROM users WHERE user_id=?", (user_id,)):
            raise UnknownUserError(f"unknown user {user_id!r}; create it first with MOS.create_user({user_id!r})")
        return user_id

    # -- cubes -----------------------------------------------------------------------------------
    def create_cube_for_user(self, cube_name: str, owner_id: str, cube_path: str | Path | None = None, config: Any = None) -> str:
        owner = self._user(owner_id)
        path = Path(cube_path) if cube_path else self.home / "cubes" / cube_name
        cube = MemCube.init_from_dir(path, config, embedder=self.embedder)
        return self.register_mem_cube(cube, owner, mem_cube_id=cube_name)

    def register_mem_cube(self, cube_or_path: MemCube | str | Path, user_id: str | None = None, mem_cube_id: str | None = None) -> str:
        """Register a cube (object or directory) under ``mem_cube_id``; a new cube is owned by ``user_id``."""
        user = self._user(user_id)
        cube = cube_or_path if isinstance(cube_or_path, MemCube) else MemCube.open(cube_or_path, embedder=self.embedder)
        cube_id = mem_cube_id or cube.cube_id
        existing = self._q("SELECT owner FROM cubes WHERE cube_id=?", (cube_id,))
        if existing:
            # re-registering needs access, never grants it, and never repoints the id at another directory
            registered = self._q("SELECT path FROM cubes WHERE cube_id=?", (cube_id,))[0][0]
            if Path(registered).resolve() != cube.path.resolve():
                raise InvalidInputError(
                    f"cube id {cube_id!r} is already registered for another directory; pass another mem_cube_id"
                )
            self._check(cube_id, user, "read", self._cube(cube_id), "register")
            return cube_id
        with self._lock:
            self._db.execute("INSERT INTO cubes VALUES (?, ?, ?)", (cube_id, str(cube.path.resolve()), user))
        cube.audit("register", user, cube_id, {"owner": user})
        self._cubes[cube_id] = cube
        return cube_id

    def share_cube_with_user(self, cube_id: str, target_user_id: str, access: Access = "read", *, user_id: str | None = None) -> None:
        """Share a cube you own with another user (``read`` or ``write``).

        The actor is ``user_id``, else the MOS's own user; only a MOS with neither acts as the owner.
        """
        actor = self._user(user_id or self.default_user or self._owner(cube_id))
        target = self._user(target_user_id)
        if access not in ("read", "write"):
            raise InvalidInputError("access must be 'read' or 'write'")
        cube = self._cube(cube_id)
        self._check(cube_id, actor, "owner", cube, "share")
        with self._lock:
            self._db.execute(
                "INSERT INTO shares VALUES (?, ?, ?) ON CONFLICT(cube_id, user_id) DO UPDATE SET access=excluded.access",
                (cube_id, target, access),
            )
        cube.audit("share", actor, cube_id, {"with": target, "access": access})

    def unshare_cube(self, cube_id: str, target_user_id: str, *, user_id: str | None = None) -> None:
        actor = self._user(user_id or self.default_user or self._owner(cube_id))
        cube = self._cube(cube_id)
        self._check(cube_id, actor, "owner", cube, "unshare")
        with self._lock:
            self._db.execute("DELETE FROM shares WHERE cube_id=? AND user_id=?", (cube_id, target_user_id))
        cube.audit("unshare", actor, cube_id, {"with": target_user_id})

    def list_cubes(self, user_id: str | None = None) -> list[dict[str, str]]:
        """The cubes ``user_id`` may read, with their access level."""
        user = self._user(user_id)
        rows = self._q(
            "SELECT cube_id, 'owner' FROM cubes WHERE owner=? UNION SELECT cube_id, access FROM shares WHERE user_id=? ORDER BY 1",
            (user, user),
        )
        return [{"cube_id": c, "access": a} for c, a in rows]

    def cube(self, cube_id: str, *, user_id: str | None = None, access: Access = "read") -> MemCube:
        """The cube object, after checking ``user_id`` may use it with ``access``."""
        user = self._user(user_id)
        cube = self._cube(cube_id)
        self._check(cube_id, user, access, cube, "open")
        return cube

    # -- memory operations ----------------------------------------------------------------------
    def add(
        self, messages: Sequence[Mapping[str, Any]] | None = None, memory_content: str | None = None, *,
        mem_cube_id: str | None = None, user_id: str | None = None, session_id: str | None = None, **kw: Any,
    ) -> list[MemoryItem]:
        user = self._user(user_id)
        cube_id = mem_cube_id or self._default_cube(user)
        cube = self._cube(cube_id)
        self._check(cube_id, user, "write", cube, "add")
        return cube.add(messages=messages, memory=memory_content, user_id=user, session_id=session_id, principal=user, **kw)

    def search(
        self, query: str, *, user_id: str | None = None, install_cube_ids: Sequence[str] | None = None, top_k: int = 10, **kw: Any,
    ) -> dict[str, list[dict[str, Any]]]:
        """Search every cube the user may read (or ``install_cube_ids``): results grouped by memory type.

        In a cube the user owns, every memory is searched; in a shared cube, too (sharing a cube shares
        its memories). ``act_mem`` lists the KV caches and ``para_mem`` the adapters the user has there.
        """
        user = self._user(user_id)
        cube_ids = list(install_cube_ids) if install_cube_ids is not None else [c["cube_id"] for c in self.list_cubes(user)]
        out: dict[str, list[dict[str, Any]]] = {"text_mem": [], "act_mem": [], "para_mem": []}
        for cube_id in cube_ids:
            cube = self._cube(cube_id)
            self._check(cube_id, user, "read", cube, "search")
            hits: list[SearchHit] = cube.search(query, top_k=top_k, **kw)
            out["text_mem"].append({"cube_id": cube_id, "memories": hits})
            for slot, sub in (("act_mem", "kv"), ("para_mem", "adapters")):
                if (cube.path / sub).is_dir():
                    out[slot].append({"cube_id": cube_id, "memories": sorted(p.name for p in (cube.path / sub).iterdir())})
        return out

    def get(self, mem_cube_id: str, memory_id: str, *, user_id: str | None = None) -> MemoryItem:
        return self.cube(mem_cube_id, user_id=user_id).get(memory_id)

    def get_all(self, mem_cube_id: str | None = None, *, user_id: str | None = None, **kw: Any) -> dict[str, list[dict[str, Any]]]:
        user = self._user(user_id)
        ids = [mem_cube_id] if mem_cube_id else [c["cube_id"] for c in self.list_cubes(user)]
        return {"text_mem": [{"cube_id": c, "memories": self.cube(c, user_id=user).get_all(**kw)} for c in ids]}

    def update(self, mem_cube_id: str, memory_id: str, *, user_id: str | None = None, **changes: Any) -> MemoryItem:
        user = self._user(user_id)
        return self.cube(mem_cube_id, user_id=user, access="write").update(memory_id, principal=user, **changes)

    def delete(self, mem_cube_id: str, memory_id: str | Sequence[str], *, user_id: str | None = None) -> int:
        user = self._user(user_id)
        return self.cube(mem_cube_id, user_id=user, access="write").delete(memory_id, principal=user)

    def chat(self, query: str, *, user_id: str | None = None, thread_id: str | None = None, top_k: int = 5, model: Any = None) -> str:
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

    def close(self) -> None:
        for cube in self._cubes.values():
            cube.close()
        self._cubes.clear()
        self._db.close()

    # -- internals ------------------------------------------------------------------------------
    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _owner(self, cube_id: str) -> str:
        rows = self._q("SELECT owner FROM cubes WHERE cube_id=?", (cube_id,))
        if not rows:
            raise CubeNotFoundError(f"no cube {cube_id!r} is registered; register it with MOS.register_mem_cube")
        return str(rows[0][0])

    def _cube(self, cube_id: str) -> MemCube:
        if not isinstance(cube_id, str):
            raise InvalidTypeError(f"cube ids are strings, got {type(cube_id).__name__}")
        if cube_id not in self._cubes:
            rows = self._q("SELECT path FROM cubes WHERE cube_id=?", (cube_id,))
            if not rows:
                raise CubeNotFoundError(f"no cube {cube_id!r} is registered; register it with MOS.register_mem_cube")
            self._cubes[cube_id] = MemCube.open(rows[0][0], embedder=self.embedder)
        return self._cubes[cube_id]

    def _default_cube(self, user: str) -> str:
        owned = self._q("SELECT cube_id FROM cubes WHERE owner=? ORDER BY cube_id", (user,))
        if len(owned) != 1:
            raise InvalidInputError(f"user {user!r} owns {len(owned)} cubes; name one with mem_cube_id=")
        return str(owned[0][0])

    def access_of(self, cube_id: str, user_id: str) -> str | None:
        """'owner', 'write', 'read' or None."""
        if self._owner(cube_id) == user_id:
            return "owner"
        rows = self._q("SELECT access FROM shares WHERE cube_id=? AND user_id=?", (cube_id, user_id))
        if rows:
            return str(rows[0][0])
        roles = self._q("SELECT role FROM users WHERE user_id=?", (user_id,))
        return "owner" if roles and roles[0][0] == "admin" else None

    def _check(self, cube_id: str, user: str, need: str, cube: MemCube, action: str) -> None:
        have = self.access_of(cube_id, user)
        if have is None or _RANK[have] < _RANK[need]:
            cube.audit(action, user, cube_id, {"needed": need, "had": have}, allowed=False)
            raise AccessDeniedError(
                f"user {user!r} may not {action} cube {cube_id!r} (needs {need}, has {have or 'no access'}); "
                "ask its owner to share it with MOS.share_cube_with_user"
            )
