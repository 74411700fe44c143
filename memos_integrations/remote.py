"""``RemoteCube``: the cube methods the faces call, served by a memcube REST service over HTTP.

Where it sits: a face types its cube as :class:`~memos_integrations.face_api.CubeAPI`; a ``RemoteCube``
satisfies that protocol, so the same face code runs against ``memcube serve`` on another machine. The
LangChain retriever and the LlamaIndex retriever and memory block call the methods below (each one or a few
calls to the service's ``/v1`` routes); the faces that need the cube's tables or vectors (the LangGraph
``MemOSStore``, the chat histories, the LlamaIndex chat and KV stores, both ``MemOSVectorStore``) send
their own operations to the service, which runs the same face class as the key's user
(:mod:`memos_integrations.remote_store`, :mod:`memos_integrations.remote_vectors`). The service acts as the
key's user (and agent), enforces access and audits refusals.

Errors come back as the same :class:`~memos_integrations.errors.MemosError` subclass the service raised
(``{"error": {"type": "ItemNotFoundError", ...}}`` becomes :class:`ItemNotFoundError`), so callers catch
what they would catch with a local cube. An unreachable service is :class:`BackendError`.

What differs from a local :class:`~memos_integrations.MemCube`:

- *Who*: the key names the user (and maybe the agent) every call acts as. A ``user_id`` the faces pass is
  sent as the acting user: the key's own user passes, another user is refused by the service unless the
  key is an admin's. ``search(user_id=...)`` and ``get_all(user_id=...)`` keep to that user's memories,
  as ``MemCube`` does (through ``/v1/faces/search`` and ``/v1/faces/memories``, filtered on the service);
  with no ``user_id`` they cover the whole cube, everything the key's user may read.
- *Not over this API yet* (refused with :class:`InvalidInputError` naming what is missing, never ignored):
  ``add_items`` (items with ids and vectors), search with a query vector or with a ``MemoryFilter`` field
  the route has none for (several users, ``ids``, ``parent_id``, states), ``add`` with ``sources``,
  ``update`` of fields other than text, tags and metadata, and the raw parts ``store``/``text_mem`` (None here).
- *The vector stores* (LangChain and LlamaIndex ``MemOSVectorStore``) do not use these methods: on a
  RemoteCube each is its face's ``RemoteVectorStore``, which sends its operations to the service's own
  store (:mod:`memos_integrations.remote_vectors`). ``embedder`` is the service cube's
  (:class:`~memos_integrations.remote_vectors.RemoteEmbedder`) unless one is given.
- *Conflict notes*: a RemoteCube has no local graph, so ``organize.links.conflict_notes`` asks its
  :meth:`RemoteCube.conflict_notes`, and the faces mark flagged conflicts as on a local cube. Each search
  asks the service for its hits' notes in the same response (``"conflicts": true``), so a face's page is
  one request; notes of any other items are one ``POST /v1/faces/conflicts`` per page. A service from
  before that field refuses it once; the cube then searches without it and asks the conflicts route.
- ``audit`` writes nothing remotely (there is no route): the service audits what it refuses; a face's own
  local refusal is logged at WARNING on this side.

Sync/async: synchronous (``httpx.Client``); the faces' async methods run it in a worker thread as they do
for a local cube.

Example:
    >>> cube = RemoteCube("http://127.0.0.1:8765", api_key="mk_...", cube_id="notes")  # doctest: +SKIP
    >>> cube.add(memory="Alice likes genmaicha.")  # doctest: +SKIP
    >>> cube.search("what tea?", top_k=3)[0].item.text  # doctest: +SKIP
    'Alice likes genmaicha.'
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from . import errors
from .access import normalize_id
from .errors import BackendError, InvalidInputError, InvalidTypeError, MemosError
from .items import MemoryItem, SearchHit
from .remote_vectors import RemoteEmbedder, search_fields

log = logging.getLogger(__name__)

_ITEM_FIELDS = frozenset(f.name for f in fields(MemoryItem))
#: Largest page asked of ``GET /v1/memories`` while listing.
PAGE = 500
#: characters per conflict note a search answers (the service's and the faces' default)
NOTE_CHARS = 80
#: how long (seconds) and how many of its latest pages' notes a RemoteCube answers conflict_notes from
NOTES_FRESH_S, NOTES_PAGES = 30.0, 8
#: seconds a conflict-notes request of its own may take: never a whole client timeout (``RemoteCube.notes_timeout``)
NOTES_TIMEOUT_S = 5.0
#: the POST routes that change no memory: any other write drops the notes kept from searches
_READ_POSTS = frozenset({"/v1/memories/search", "/v1/faces/search", "/v1/faces/conflicts", "/v1/faces/memories",
                         "/v1/vector-stores/embed"})


class RemoteCube:
    """A cube served by ``memcube serve``, with the MemCube methods the faces use.

    Args:
        base_url: the service, e.g. ``"http://127.0.0.1:8765"`` (the ``/v1`` routes live under it).
        api_key: a key from ``memcube keys create``; it names the user (and maybe agent) every call acts as.
        cube_id: the cube to use; None lets the service pick the user's own cube.
        timeout: seconds per HTTP request.
        embedder: an embedder for faces that embed on the client side (optional; must match the cube's);
            None embeds on the service when a face needs a vector.
        client: an ``httpx.Client`` to use instead of a new one (proxies, TLS settings, tests).
    """

    #: the vector-store faces forward their operations to the service's own faces (remote_vectors)
    is_remote = True

    def __init__(
        self, base_url: str, api_key: str, cube_id: str | None = None, *, timeout: float = 30.0,
        embedder: Any = None, client: Any = None,
    ) -> None:
        import httpx

        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InvalidInputError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if not isinstance(api_key, str) or not api_key.strip():
            raise InvalidInputError("api_key must be a non-empty string; create one with: memcube keys create --user <you>")
        self.base_url = base_url.rstrip("/")
        self.cube_id: str = cube_id or ""
        self._cube_param = cube_id
        # the cube's embedder for faces that embed here: the given one (checked against the service's by the
        # vector stores), else a proxy that embeds on the service (remote_vectors.RemoteEmbedder)
        self.embedder = embedder if embedder is not None else RemoteEmbedder(self)
        self.path = PurePosixPath("/remote") / (cube_id or "default")  # no local directory: a label for messages
        self.store: Any = None
        self.text_mem: Any = None
        self._own_client = client is None
        self._http = client or httpx.Client(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._ask_notes = True  # False once a service refuses the search's "conflicts" field (an older one)
        self._notes_lock = threading.Lock()
        self._pages: deque[tuple[float, frozenset[tuple[Any, ...]], dict[str, list[str]]]] = deque(maxlen=NOTES_PAGES)
        self._writes = 0  # writes through this cube begun or ended: a search overlapping one keeps no notes
        #: seconds a conflict-notes request of its own may take (:data:`NOTES_TIMEOUT_S`, never more than ``timeout``)
        self.notes_timeout = min(NOTES_TIMEOUT_S, timeout)

    # -- writes --------------------------------------------------------------------------------------
    def add(
        self,
        messages: Sequence[Mapping[str, Any]] | None = None,
        memory: str | Sequence[str] | None = None,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        timestamp: Any = None,
        kind: Any = None,
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        sources: Sequence[str] = (),
        principal: str | None = None,
    ) -> list[MemoryItem]:
        """``POST /v1/memories``: chat ``messages`` (one item each) or ``memory`` text(s), as the key's user.

        Args:
            messages: ``[{"role", "content"}, ...]``.
            memory: a text, or a list of texts (one request each).
            user_id: the acting user (sent when given; the service refuses another user's id unless admin).
            agent_id: sent; the service refuses one that is not the key's agent.
            session_id: the conversation the memories came from.
            timestamp: when it was said (a string the cube's time parser reads, or a datetime).
            kind: the item kind (``"fact"``, ``"preference"``, ...).
            tags: labels.
            metadata: JSON fields kept with each item.
            sources: not supported over this API yet (refused when given).
            principal: not sent (the key is the principal).

        Returns:
            The items written.

        Raises:
            InvalidInputError: neither or both of ``messages``/``memory``, an unsupported argument, or the
                service refused the input (the same subclass it raised).
        """
        self._refuse(("sources", list(sources) or None), what="add")
        if (messages is None) == (memory is None):
            raise InvalidInputError("pass exactly one of messages=[...] or memory='...'")
        if isinstance(tags, str):
            raise InvalidTypeError("tags must be a list of strings, e.g. tags=['work']")
        common: dict[str, Any] = _drop_none({
            "session_id": session_id, "agent_id": agent_id, "kind": getattr(kind, "value", kind),
            "user_id": user_id, "timestamp": _when(timestamp),
            "metadata": dict(metadata) if metadata is not None else None, "tags": list(tags) or None,
        })
        if messages is not None:
            rows = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
            return self._items(self._call("POST", "/v1/memories", json={"messages": rows, **common}))
        texts = [memory] if isinstance(memory, str) else list(memory or ())
        if not texts:
            raise InvalidTypeError("memory must be a string or a non-empty list of strings")
        out: list[MemoryItem] = []
        for text in texts:
            out.extend(self._items(self._call("POST", "/v1/memories", json={"text": text, **common})))
        return out

    def add_items(self, items: Sequence[MemoryItem], edges: Sequence[Any] = (), vectors: Any = None) -> list[MemoryItem]:
        raise InvalidInputError(
            "RemoteCube.add_items is not available: the REST API has no route that stores items with their own "
            "ids and vectors yet; add texts with RemoteCube.add, or use a local MemCube")

    def update(self, item_id: str, *, principal: str | None = None, expected_version: int | None = None,
               **changes: Any) -> MemoryItem:
        """``PATCH /v1/memories/{id}`` with ``text``, ``metadata`` and/or ``tags``; returns the new version."""
        other = sorted(set(changes) - {"text", "metadata", "tags"})
        if other:
            raise InvalidInputError(
                f"RemoteCube.update sends text, metadata and tags only; {other} have no field in "
                "PATCH /v1/memories/{id} yet")
        body = _drop_none({**changes, "expected_version": expected_version})
        return self._item(self._call("PATCH", f"/v1/memories/{_seg(item_id)}", json=body))

    def delete(self, ids: str | Sequence[str], *, principal: str | None = None) -> int:
        """``DELETE /v1/memories/{id}`` for each id; returns how many were deleted."""
        if not isinstance(ids, (str, list, tuple)):
            raise InvalidTypeError(f"delete takes a memory id or a list of ids, got {type(ids).__name__}")
        for item_id in [ids] if isinstance(ids, str) else ids:
            self._call("DELETE", f"/v1/memories/{_seg(item_id)}")
        return 1 if isinstance(ids, str) else len(ids)

    def feedback(self, text: str, *, user_id: Any = None, session_id: str | None = None, timestamp: Any = None,
                 principal: str | None = None) -> Any:
        """``POST /v1/feedback``: tell the service a memory was wrong or outdated, in plain language.

        Takes :meth:`MemCube.feedback`'s arguments (the key's user acts; ``timestamp`` and ``principal``
        are the service's to set) and returns an ``AddResult`` of the memories the service wrote; the
        service does not report the individual operations, so ``operations`` stays empty.
        """
        from .readers.result import AddResult

        data = self._call("POST", "/v1/feedback", json=_drop_none({"text": text, "session_id": session_id}))
        return AddResult([_to_item(row) for row in _field(data, "items", list)],
                         note="applied by the service; it does not report each operation")

    # -- reads ---------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        user_id: Any = None,
        agent_id: Any = None,
        session_id: str | Sequence[str] | None = None,
        kinds: Sequence[Any] | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        time_from: Any = None,
        time_to: Any = None,
        top_k: int = 10,
        plan: Any = None,
        filter: Any = None,
        now: Any = None,
        query_vector: Any = None,
        as_of: Any = None,
        current_session: str | None = None,
    ) -> list[SearchHit]:
        """``POST /v1/memories/search``: hybrid search over the cube, as the key's user.

        Args:
            query: what to look for.
            user_id: only this user's memories, as ``MemCube.search``; it is also the acting user, so another
                user's id is refused by the service unless the key is an admin's. None: the whole cube.
            agent_id: only this agent's memories (the service refuses one that is not the key's agent).
            session_id: only memories from this session.
            kinds: only these kinds.
            tags: only memories with all these tags.
            metadata: equality filters on metadata fields.
            time_from: only memories from this time on (ISO 8601, a date phrase, or a datetime).
            time_to: only memories up to this time.
            top_k: how many hits.
            plan: ``"fast"``, ``"balanced"`` or ``"deep"`` (None: the service's default).
            filter: a ``MemoryFilter`` (it replaces the arguments above, as in ``MemCube.search``); one with a
                field the route has none for (several users, ``ids``, ``parent_id``, states) is refused.
            now: the reference time for relative expressions in the query.
            query_vector: not supported over this API (refused when given): the service embeds the query.
            as_of: what was true then (superseded versions valid at that time), as ``MemCube.search(as_of=)``.
            current_session: the session the caller acts in (its working memory leads where the plan says so),
                as ``MemCube.search(current_session=)``.

        Returns:
            Hits, best first, with the service's scores.

        Raises:
            InvalidInputError: an unsupported argument, or the service refused the query.
        """
        self._refuse(("query_vector", query_vector), what="search")
        if filter is not None:  # as MemCube.search, the filter replaces the scope and field arguments
            found = search_fields(filter)
            user_id, agent_id, session_id, kinds, tags = (found[k] for k in ("user_id", "agent_id", "session_id", "kinds", "tags"))
            metadata, time_from, time_to = found["metadata"], found["time_from"], found["time_to"]
            as_of = found["as_of"] if found["as_of"] is not None else as_of
        for name, value in (("user_id", user_id), ("agent_id", agent_id), ("session_id", session_id)):
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"RemoteCube.search takes one {name} (a string), got {type(value).__name__}")
        body = _drop_none({
            "query": query, "k": top_k, "session_id": session_id, "user_id": user_id, "agent_id": agent_id,
            "kinds": [getattr(k, "value", k) for k in kinds] if kinds is not None else None,
            "tags": list(tags) if tags is not None else None,
            "metadata": dict(metadata) if metadata is not None else None,
            "plan": getattr(plan, "name", plan) if plan is not None and not isinstance(plan, str) else plan,
            "time_from": _when(time_from), "time_to": _when(time_to), "as_of": _when(as_of), "now": _when(now),
            "current_session": current_session,
        })
        # a user_id filters to that user's memories, as MemCube.search does (the faces' route); none: the
        # whole cube, everything the key's user may read (MOS semantics, as a MemCube with no user_id)
        route = "/v1/memories/search" if user_id is None else "/v1/faces/search"
        writes = self._writes  # a write through this cube before the answer comes: its notes may predate it
        data = self._search(route, body)
        page = [_to_hit(h) for h in _field(data, "hits", list)]
        self._keep_notes(page, data.get("conflicts"), writes)
        return page

    def _search(self, route: str, body: dict[str, Any]) -> Any:
        """The search, asking for its hits' conflict notes too unless the service is one that refuses that."""
        if not self._ask_notes:
            return self._call("POST", route, json=body)
        try:
            return self._call("POST", route, json={**body, "conflicts": True})
        except (InvalidInputError, InvalidTypeError) as exc:
            if "conflicts:" not in str(exc):  # an older service: "conflicts: Extra inputs are not permitted"
                raise
        # without the field: refused again, it was not about the field (a text quoting "conflicts:"), notes stay on
        data, self._ask_notes = self._call("POST", route, json=body), False
        log.info("%s does not answer conflict notes with a search; asking /v1/faces/conflicts instead", self.base_url)
        return data

    def _keep_notes(self, hits: Sequence[SearchHit], notes: Any, writes: int) -> None:
        """Keep a page's notes unless malformed or its search overlapped a write (``writes``: the count at sending)."""
        ids = frozenset(h.item.id for h in hits)
        if not isinstance(notes, dict) or not ids or not all(
                k in ids and isinstance(v, list) and all(isinstance(n, str) for n in v) for k, v in notes.items()):
            return
        with self._notes_lock:
            if self._writes == writes:
                self._pages.append((time.monotonic(), frozenset(_whose(h.item) for h in hits), notes))

    def _known_notes(self, items: Sequence[MemoryItem], chars: int) -> dict[str, list[str]] | None:
        """The notes of ``items`` if a recent search answered them all (at its length; by id, version, user, agent,
        cube: one id can be in two cubes, a LangGraph value's index id hashes its namespace and key), else None."""
        wanted, now = {_whose(it) for it in items}, time.monotonic()
        with self._notes_lock:
            for at, page, notes in reversed(self._pages):
                if chars == NOTE_CHARS and now - at <= NOTES_FRESH_S and wanted <= page:
                    return {i: list(notes[i]) for i in dict.fromkeys(it.id for it in items) if i in notes}
        return None

    def get(self, item_id: str) -> MemoryItem:
        """``GET /v1/memories/{id}``."""
        return self._item(self._call("GET", f"/v1/memories/{_seg(item_id)}"))

    def get_all(
        self, *, user_id: Any = None, session_id: str | None = None, kinds: Any = None,
        limit: int | None = None, offset: int = 0, include_archived: bool = False,
    ) -> list[MemoryItem]:
        """Every live memory the key may read (``GET /v1/memories``, following ``next_cursor``), oldest first.

        ``user_id`` lists that user's memories only, as ``MemCube.get_all`` does (it is also the acting user:
        the service refuses another user's id unless the key is an admin's), through ``POST /v1/faces/memories``,
        which filters in the service's query: ``limit`` / ``offset`` count that user's memories and no other
        user's memory is sent. ``kinds`` and ``include_archived`` have no field yet and are refused when set.
        """
        self._refuse(("kinds", kinds), ("include_archived", include_archived or None), what="get_all")
        if user_id is not None:
            return self._user_items(normalize_id(user_id), session_id, limit, offset)
        out: list[MemoryItem] = []
        cursor: str | None = None
        seen: set[str] = set()
        want = None if limit is None else offset + limit
        while want is None or len(out) < want:
            page = PAGE if want is None else min(PAGE, want - len(out))
            params = _drop_none({"limit": page, "cursor": cursor, "session_id": session_id})
            data = self._call("GET", "/v1/memories", params=params)
            out.extend(_to_item(row) for row in _field(data, "items", list))
            cursor = data.get("next_cursor")
            if not cursor:
                break
            if not isinstance(cursor, str) or cursor in seen:  # a server whose pages never end: stop, say so
                raise BackendError(f"GET /v1/memories on {self.base_url} answered the cursor {str(cursor)[:80]!r} "
                                   "again; the service's paging is broken: check its version, or pass limit=")
            seen.add(cursor)
        return out[offset:want]

    def _user_items(self, user_id: str | None, session_id: str | None, limit: int | None, offset: int) -> list[MemoryItem]:
        """``get_all(user_id=...)``: pages of ``POST /v1/faces/memories`` from ``offset``, filtered on the service."""
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInputError(f"offset must be an int >= 0, got {offset!r}")
        out: list[MemoryItem] = []
        while limit is None or len(out) < limit:
            page = PAGE if limit is None else min(PAGE, limit - len(out))
            body = _drop_none({"user_id": user_id, "session_id": session_id, "limit": page, "offset": offset + len(out)})
            data = self._call("POST", "/v1/faces/memories", json=body)
            rows = _field(data, "items", list)
            out.extend(_to_item(row) for row in rows)
            if data.get("more") is not True or not rows:
                break
        return out

    def conflict_notes(self, items: Sequence[MemoryItem], chars: int = 80) -> dict[str, list[str]]:
        """Item id -> the short texts of the memories it is flagged as contradicting, what
        :func:`memos_integrations.organize.links.conflict_notes` asks a cube with no local graph.

        Items of a page this cube searched in the last :data:`NOTES_FRESH_S` seconds, with no write through
        this cube since: the notes its search answered (no request). Any other items: one ``POST /v1/faces/conflicts`` for the page; none for no
        items, given at most :attr:`notes_timeout` seconds (a context does without notes rather than wait a
        whole client timeout). Either way the service computed them in the cube as the key's user, so the notes
        are what a local cube would show that user.

        Raises:
            MemosError: the service refused or is unreachable (``conflict_notes`` answers ``{}`` then), or
                answered something that is not notes for the ids asked (:class:`BackendError`).
        """
        ids = list(dict.fromkeys(it.id for it in items))
        if not ids:
            return {}
        known = self._known_notes(items, chars)  # a page this cube just searched: answered with it
        if known is not None:
            return known
        found = _field(self._call("POST", "/v1/faces/conflicts", json={"ids": ids, "chars": chars},
                                  timeout=self.notes_timeout), "conflicts", dict)
        asked = set(ids)
        for item_id, notes in found.items():
            if item_id not in asked or not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
                raise BackendError(f"POST /v1/faces/conflicts answered {str(found)[:200]}, not notes for the ids asked; "
                                   "check that the service and client versions match")
        return found

    def history(self, item_id: str) -> list[MemoryItem]:
        """``GET /v1/memories/{id}/history``: every version, oldest first."""
        data = self._call("GET", f"/v1/memories/{_seg(item_id)}/history")
        return [_to_item(v) for v in _field(data, "versions", list)]

    def stats(self) -> dict[str, Any]:
        """``GET /v1/stats``."""
        data = self._call("GET", "/v1/stats")
        if not isinstance(data, dict):
            raise BackendError(f"GET /v1/stats answered {str(data)[:200]}, not a JSON object; check the service's version")
        return data

    def audit(self, action: str, principal: str | None, target: str | None,
              detail: Mapping[str, Any] | None = None, allowed: bool = True) -> None:
        """No remote audit route: the service audits what it refuses; a face's local refusal is logged here."""
        if not allowed:
            log.warning("refused locally (not sent to the service): %s by %s on %s %s", action, principal, target,
                        dict(detail or {}))

    # -- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        if self._own_client:
            self._http.close()

    def __enter__(self) -> RemoteCube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteCube({self.base_url!r}, cube_id={self._cube_param!r})"

    # -- internals -----------------------------------------------------------------------------------
    def _call(self, method: str, route: str, *, json: Any = None, params: Mapping[str, Any] | None = None,
              timeout: float | None = None) -> Any:
        query = dict(params or {})
        if write := method != "GET" and route not in _READ_POSTS:  # a write may change what kept notes say
            self._forget_notes()
        try:
            return self._request(method, route, json, query, timeout)
        finally:  # and a search answered while it ran must not keep notes read before it
            if write:
                self._forget_notes()

    def _forget_notes(self) -> None:
        with self._notes_lock:
            self._pages.clear()
            self._writes += 1

    def _request(self, method: str, route: str, json: Any, query: dict[str, Any], timeout: float | None) -> Any:
        import httpx

        if self._cube_param:  # in a POST's body; in the query of the per-item routes (GET, PATCH, DELETE)
            if method == "POST":
                json = {**(json or {}), "cube_id": self._cube_param}
            else:
                query["cube_id"] = self._cube_param
        try:
            extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}  # none: the client's own
            response = self._http.request(method, self.base_url + route, json=json, params=query or None,
                                          headers=self._headers, **extra)
        except httpx.TimeoutException as exc:
            raise BackendError(f"{method} {route} on {self.base_url} timed out ({exc}); retry, or raise timeout=") from exc
        except httpx.TransportError as exc:
            raise BackendError(f"cannot reach the memory service at {self.base_url} ({exc}); is `memcube serve` "
                               "running there?") from exc
        if response.status_code >= 400:
            raise _error_from(response, f"{method} {route}")
        if response.status_code == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise BackendError(f"{method} {route} answered {response.status_code} with a body that is not JSON") from exc

    def _item(self, data: Any) -> MemoryItem:
        return _to_item(data.get("item", data) if isinstance(data, dict) and "item" in data else data)

    def _items(self, data: Any) -> list[MemoryItem]:
        return [_to_item(row) for row in _field(data, "items", list)]

    @staticmethod
    def _refuse(*args: tuple[str, Any], what: str) -> None:
        given = [name for name, value in args if value is not None]
        if given:
            raise InvalidInputError(
                f"RemoteCube.{what} cannot send {given}: the REST API has no field for them yet; leave them unset, "
                "or use a local MemCube for that query")


def _whose(item: MemoryItem) -> tuple[Any, ...]:
    return (item.id, item.version, item.user_id, item.agent_id, item.cube_id)


def _to_item(data: Any) -> MemoryItem:
    """A memory from the service's JSON; anything else (a wrong kind, time or type) is a BackendError."""
    if not isinstance(data, dict):
        raise BackendError(f"the service answered a memory that is not a JSON object: {str(data)[:200]}")
    if not isinstance(data.get("id"), str) or not isinstance(data.get("text"), str):
        raise BackendError(f"the service answered a memory without a string id and text: {str(data)[:200]}")
    try:
        return MemoryItem.from_dict({k: v for k, v in data.items() if k in _ITEM_FIELDS})
    except (ValueError, TypeError) as exc:  # InvalidInputError is a ValueError too
        raise BackendError(f"the service answered a memory this client cannot read ({exc}): {str(data)[:200]}; "
                           "check that the service and client versions match") from exc


def _to_hit(data: Any) -> SearchHit:
    """One search hit: ``{"item": {...}, "score": number, "ranks": {leg: rank}}``."""
    item = _to_item(data.get("item") if isinstance(data, dict) else None)
    score, ranks = data.get("score", 0.0), data.get("ranks") or {}
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not isinstance(ranks, dict):
        raise BackendError(f"the service answered a search hit with a score {str(score)[:40]!r} and ranks "
                           f"{str(ranks)[:80]!r}; expected a number and an object")
    return SearchHit(item=item, score=float(score), ranks=dict(ranks))


def _field(data: Any, name: str, kind: type) -> Any:
    value = data.get(name) if isinstance(data, dict) else None
    if not isinstance(value, kind):
        raise BackendError(f"the service's answer has no {name!r} {kind.__name__}: {str(data)[:200]}")
    return value


def _seg(value: Any) -> str:
    """An id as one URL path segment (an id holding ``/`` or ``..`` cannot reach another route)."""
    if not isinstance(value, str) or not value:
        raise InvalidTypeError(f"a memory id is a non-empty string, got {type(value).__name__}")
    return quote(value, safe="")


def _when(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _error_from(response: Any, what: str) -> MemosError:
    """The MemosError subclass the service named (``{"error": {"type", "message", "request_id"}}``)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    name = err.get("type") if isinstance(err, dict) else None
    message = str(err.get("message")) if isinstance(err, dict) else (response.text[:300] or response.reason_phrase)
    request_id = err.get("request_id") if isinstance(err, dict) else response.headers.get("x-request-id")
    suffix = f" (request {request_id})" if request_id else ""
    cls = _error_class(name) if isinstance(name, str) and name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, MemosError)):
        cls = {401: errors.AccessDeniedError, 403: errors.AccessDeniedError, 404: errors.ItemNotFoundError,
               409: errors.ConflictError, 413: errors.OversizedInputError, 422: InvalidInputError}.get(
            response.status_code, BackendError if response.status_code >= 500 else InvalidInputError)
        message = f"{what} answered {response.status_code}: {message}"
    return cls(message + suffix)


def _error_class(name: str) -> type | None:
    """The MemosError subclass called ``name``: the engine's, the service's own (when the server extra is here),
    or any other loaded subclass (a face's own, e.g. ``InvalidStoreNamespaceError``)."""
    found = getattr(errors, name, None)
    if found is None:
        import importlib

        try:
            found = getattr(importlib.import_module("memos_integrations.server.errors"), name, None)
        except ImportError:  # a client without the [server] extra: look among the loaded subclasses
            found = None
    if found is None:
        found = next((c for c in _subclasses(errors.MemosError) if c.__name__ == name), None)
    return found if isinstance(found, type) else None


def _subclasses(cls: type) -> list[type]:
    """Every loaded subclass of ``cls``, depth first."""
    out: list[type] = []
    sub: type
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out
