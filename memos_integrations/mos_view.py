"""A user's view of a cube registered in MOS: every call re-checks access, so revocation reaches live objects.

Where it sits: ``MOS.cube(cube_id, user_id=...)`` returns a :class:`CubeView`, never the bare
:class:`~memos_integrations.MemCube`. The view satisfies the faces' :class:`~memos_integrations.face_api.CubeAPI`
protocol, so it can be handed to any face, and it asks MOS on each call whether its user still has the
access that call needs (``read`` for reads, ``write`` for writes, ``owner`` for the audit log). An unshare,
or a downgrade from ``write`` to ``read``, therefore takes effect on views handed out before it; every
refusal is written to the cube's audit log.

What it cannot take back: an object read off the view while access held (``view.store``, ``view.text_mem``,
a list of items) is the caller's from then on. Reading ``.store`` or ``.text_mem`` is checked like any read,
but code that must stay revocable should call the view's methods, not keep the raw objects.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .access import deny, normalize_id
from .items import Edge, MemoryItem, SearchHit

if TYPE_CHECKING:
    from .cube import MemCube
    from .mos import MOS


#: methods of the raw store and text memory that change the cube (everything else is a read); the faces
#: write through these, so a view must not hand them out on a read check alone
_STORE_WRITES = frozenset({
    "clear", "drop", "put", "transaction", "set_meta", "write_items", "put_vectors", "touch", "flush_usage",
    "queue_index", "clear_outbox", "add_edges", "remove_edges", "kv_put", "kv_delete", "close",
})
_TEXT_MEM_WRITES = frozenset({
    "add_items", "add_messages", "add_whole", "update", "delete", "relate", "sync_index", "reconcile", "reindex",
})


_GRAPH_WRITES = frozenset({"add_edges", "remove_edges"})
#: the store's SQL database (``store.db``), which the faces' table modules use: a transaction is a write
_DB_WRITES = frozenset({"transaction", "executescript", "close"})
_INDEX_WRITES = frozenset({"upsert", "delete", "reset"})
_ACT_MEM_WRITES = frozenset({"store", "set_prefix", "invalidate_prefix", "drop", "flush", "clear"})
_PARA_MEM_WRITES = frozenset({"assign", "distill", "merge", "delete", "bind", "activate", "unload"})
#: parts reached through a guarded part, guarded in turn (``text_mem.graph.add_edges`` is a write)
_NESTED: dict[str, dict[str, frozenset[str]]] = {
    "text_mem": {"graph": _GRAPH_WRITES, "store": _STORE_WRITES, "index": _INDEX_WRITES},
    "store": {"db": _DB_WRITES},
}


class _Checked:
    """A raw part of the cube (``store``, ``text_mem``, ``graph``) whose every attribute is fetched through an
    access check: a face built on a view keeps this object, so a write needs write access and an unshare reaches it."""

    def __init__(self, view: CubeView, path: tuple[str, ...], writes: frozenset[str]) -> None:
        self._view, self._path, self._writes = view, path, writes

    def __getattr__(self, name: str) -> Any:
        what = ".".join((*self._path, name))
        nested = _NESTED.get(self._path[-1], {})
        if name in nested:
            self._view._need("read", what)
            return _Checked(self._view, (*self._path, name), nested[name])
        target: Any = self._view._need("write" if name in self._writes else "read", what)
        for part in self._path:
            target = getattr(target, part)
        return getattr(target, name)

    def __repr__(self) -> str:
        return f"<checked {'.'.join(self._path)} of {self._view!r}>"


class CubeView:
    """One user's access to one cube, checked on every call (see the module docstring).

    Example:
        >>> import tempfile
        >>> from memos_integrations import MOS
        >>> mos = MOS(tempfile.mkdtemp())
        >>> mos.create_user("alice"); mos.create_user("bob")
        >>> cube_id = mos.create_cube_for_user("notes", owner_id="alice")
        >>> _ = mos.add(memory_content="The spare key is under the fern.", mem_cube_id=cube_id, user_id="alice")
        >>> mos.share_cube_with_user(cube_id, "bob", "read", user_id="alice")
        >>> view = mos.cube(cube_id, user_id="bob")
        >>> view.search("where is the key?", top_k=1)[0].item.text
        'The spare key is under the fern.'
        >>> mos.unshare_cube(cube_id, "bob", user_id="alice")
        >>> view.search("where is the key?")
        Traceback (most recent call last):
        ...
        memos_integrations.errors.AccessDeniedError: user 'bob' may not search cube 'notes' (needs read, has no access); ask its owner to share it with MOS.share_cube_with_user
        >>> mos.close()
    """

    def __init__(self, mos: MOS, cube_id: str, user_id: str) -> None:
        self._mos = mos
        self._cube_id = cube_id
        self._user = user_id

    # -- identity (not secret: needed by as_cube and by callers naming the cube) -------------------
    @property
    def cube_id(self) -> str:
        return self._cube_id

    @property
    def user_id(self) -> str:
        """The user this view acts for."""
        return self._user

    @property
    def path(self) -> Path:
        return self._mos._cube(self._cube_id).path

    @property
    def embedder(self) -> Any:
        return self._mos._cube(self._cube_id).embedder

    # -- raw parts: checked as reads ----------------------------------------------------------------
    @property
    def store(self) -> Any:
        """The cube's store, behind a guard that checks each call (writes need write access)."""
        self._need("read", "store")
        return _Checked(self, ("store",), _STORE_WRITES)

    @property
    def text_mem(self) -> Any:
        """The cube's text memory, behind a guard that checks each call (writes need write access)."""
        self._need("read", "text_mem")
        return _Checked(self, ("text_mem",), _TEXT_MEM_WRITES)

    @property
    def graph(self) -> Any:
        """The cube's graph, behind a guard that checks each call (edge writes need write access)."""
        self._need("read", "graph")
        return _Checked(self, ("graph",), _GRAPH_WRITES)

    @property
    def index(self) -> Any:
        self._need("read", "index")
        return _Checked(self, ("index",), _INDEX_WRITES)

    @property
    def config(self) -> Any:
        return self._need("read", "config").config

    @property
    def act_mem(self) -> Any:
        self._need("read", "act_mem")
        return _Checked(self, ("act_mem",), _ACT_MEM_WRITES)

    @property
    def para_mem(self) -> Any:
        self._need("read", "para_mem")
        return _Checked(self, ("para_mem",), _PARA_MEM_WRITES)

    # -- reads -----------------------------------------------------------------------------------
    def search(self, query: str, **kw: Any) -> list[SearchHit]:
        """:meth:`MemCube.search`, if the user may still read the cube."""
        return self._need("read", "search").search(query, **kw)

    def get(self, item_id: str) -> MemoryItem:
        return self._need("read", "get").get(item_id)

    def get_all(self, **kw: Any) -> list[MemoryItem]:
        return self._need("read", "get_all").get_all(**kw)

    def history(self, item_id: str) -> list[MemoryItem]:
        return self._need("read", "history").history(item_id)

    def neighbors(self, item_id: str, depth: int = 1, types: Sequence[str] | None = None) -> list[MemoryItem]:
        return self._need("read", "neighbors").neighbors(item_id, depth, types)

    def stats(self) -> dict[str, Any]:
        return self._need("read", "stats").stats()

    def export_jsonl(self, path: str | Path | None = None) -> Iterator[dict[str, Any]] | int:
        return self._need("read", "export_jsonl").export_jsonl(path)

    def dump(self, path: str | Path) -> MemCube:
        """A copy of the cube at ``path`` (a reader may copy what they may read; the copy is not in MOS)."""
        return self._need("read", "dump").dump(path)

    def audit_log(self, limit: int = 100, principal: str | None = None) -> list[dict[str, Any]]:
        """The cube's audit log: who was refused what is the owner's business, so it needs owner access."""
        return self._need("owner", "audit_log").audit_log(limit, principal)

    # -- writes ----------------------------------------------------------------------------------
    def add(self, messages: Any = None, memory: Any = None, **kw: Any) -> list[MemoryItem]:
        """:meth:`MemCube.add` as this user: ``user_id`` and ``principal`` default to the view's user.

        As with :meth:`MOS.add`, the memories are the acting user's: naming another ``user_id`` is refused
        (audited), since every face recalls a user's memories by that id.
        """
        cube = self._need("write", "add")
        kw.setdefault("user_id", self._user)
        if kw["user_id"] is not None and normalize_id(kw["user_id"]) != self._user:
            raise deny(cube.audit, "add", self._user, self._cube_id,
                       f"a cube view of user {self._user!r} cannot file memories under another user_id; "
                       "get a view for that user with MOS.cube(cube_id, user_id=...)", {"as_user": kw["user_id"]})
        kw["user_id"] = normalize_id(kw["user_id"])
        kw["principal"] = self._principal(cube, kw.get("principal"), "add")
        return cube.add(messages=messages, memory=memory, **kw)

    def add_items(self, items: Sequence[MemoryItem], edges: Sequence[Edge] = (), vectors: Any = None) -> list[MemoryItem]:
        return self._need("write", "add_items").add_items(items, edges, vectors)

    def update(self, item_id: str, *, principal: str | None = None, **changes: Any) -> MemoryItem:
        cube = self._need("write", "update")
        return cube.update(item_id, principal=self._principal(cube, principal, "update"), **changes)

    def delete(self, ids: str | Sequence[str], *, principal: str | None = None) -> int:
        cube = self._need("write", "delete")
        return cube.delete(ids, principal=self._principal(cube, principal, "delete"))

    def delete_all(self, *, user_id: str | None = None, principal: str | None = None) -> int:
        cube = self._need("write", "delete_all")
        return cube.delete_all(user_id=user_id, principal=self._principal(cube, principal, "delete_all"))

    def feedback(self, text: str, **kw: Any) -> Any:
        """:meth:`MemCube.feedback` as this user (write access): it corrects the view's user's memories only."""
        cube = self._need("write", "feedback")
        kw.setdefault("user_id", self._user)
        if kw["user_id"] is not None and normalize_id(kw["user_id"]) != self._user:
            raise deny(cube.audit, "feedback", self._user, self._cube_id,
                       f"a cube view of user {self._user!r} cannot correct another user's memories; "
                       "get a view for that user with MOS.cube(cube_id, user_id=...)", {"as_user": kw["user_id"]})
        kw["user_id"] = normalize_id(kw["user_id"])
        kw["principal"] = self._principal(cube, kw.get("principal"), "feedback")
        return cube.feedback(text, **kw)

    def relate(self, src: str, dst: str, type: str, weight: float = 1.0, **metadata: Any) -> Edge:
        return self._need("write", "relate").relate(src, dst, type, weight, **metadata)

    def import_jsonl(self, path: str | Path) -> int:
        return self._need("write", "import_jsonl").import_jsonl(path)

    def merge(self, other: MemCube | CubeView, *, principal: str | None = None) -> int:
        cube = self._need("write", "merge")
        source = other._need("read", "merge") if isinstance(other, CubeView) else other
        return cube.merge(source, principal=self._principal(cube, principal, "merge"))

    def reindex(self, reembed: bool = False) -> int:
        return self._need("write", "reindex").reindex(reembed)

    def reconcile(self, full: bool = True) -> dict[str, int]:
        return self._need("write", "reconcile").reconcile(full)

    def audit(self, action: str, principal: str | None, target: str | None,
              detail: Mapping[str, Any] | None = None, allowed: bool = True) -> None:
        """Write an audit entry (faces log their own refusals here); one made for another principal names this user."""
        cube = self._need("read", "audit")
        extra = {} if principal == self._user else {"by": self._user}
        cube.audit(action, principal, target, {**dict(detail or {}), **extra}, allowed)

    # -- internals -------------------------------------------------------------------------------
    def _need(self, need: str, action: str) -> MemCube:
        return self._mos._authorized(self._cube_id, self._user, need, action)

    def _principal(self, cube: MemCube, principal: str | None, action: str) -> str:
        """Who a write is recorded as: the view's user, or one of their agents (``agent:<id>``), no one else."""
        if principal is None or principal == self._user or (isinstance(principal, str) and principal.startswith("agent:")):
            return principal or self._user
        raise deny(cube.audit, action, self._user, self._cube_id,
                   f"a cube view of user {self._user!r} cannot write as {principal!r}; "
                   "get a view for that user with MOS.cube(cube_id, user_id=...)", {"as": principal})

    def __repr__(self) -> str:
        return f"CubeView(cube_id={self._cube_id!r}, user_id={self._user!r})"
