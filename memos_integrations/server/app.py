"""The memory service's FastAPI app: REST over MOS under ``/v1``, the MCP endpoint at ``/mcp``, health routes.

Sync/async policy: the core is synchronous, so every route that touches MOS is a plain ``def``, which
FastAPI runs in its worker-thread pool; nothing blocking runs on the event loop. The streaming chat
route computes its answer in a worker thread too (:mod:`.chat`).

Every route under ``/v1`` authenticates its key (:mod:`.auth`), acts as the key's user (an admin's key
may name another user), and leaves every access decision to MOS (:mod:`.service`). Errors are the
structured bodies of :mod:`.errors`.
"""


import base64
import binascii
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPBearer

from ..errors import BackendError, InvalidInputError, ItemNotFoundError, MemosError
from ..mos import MOS
from ..storage.keys import KeyStore
from ..storage.rate_limits import RateBuckets
from ..textual import cache_scope
from ..textual.index_defer import defer_writes
from . import errors, fastpath, idempotent, models
from .access_log import AccessLogMiddleware, take_over_uvicorn
from .auth import Authenticator, Principal, token_of
from .errors import ERRORS, UnsupportedError
from .ids import check_path_ids
from .json_body import StrictJSONRoute
from .late_embed import search_plan
from .limits import BodyLimitMiddleware, Limits, RateLimiter
from .routes_vectors import vector_routes
from .search_front import SEARCH_THREADS, Prepared, SearchFront, two_step
from .search_notes import search_answer
from .service import Service, item_json
from .slow_clients import SlowBodyMiddleware

_bearer = HTTPBearer(auto_error=False, description="an API key from `memcube keys create`")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, for clients that cannot send Bearer")


def create_app(mos: MOS, *, keys: KeyStore, limits: Limits | None = None, mcp: bool = True, cube_config: Any = None,
               shared: bool = False, fast_path: bool = True, search_threads: int = SEARCH_THREADS) -> FastAPI:
    """The service for ``mos``, authenticating with ``keys``.

    Args:
        mos: the MOS to serve (its chat model answers ``/v1/chat/completions``).
        keys: the API keys (normally ``KeyStore.open(mos.home)``).
        limits: rate, body-size and result limits, CORS origins; defaults to :class:`Limits`'s.
        mcp: mount the MCP endpoint at ``/mcp`` when :mod:`memos_integrations.server.mcp` is installed.
        cube_config: the :class:`~memos_integrations.CubeConfig` of cubes the service creates (default: embedded).
        shared: other processes serve this home too (``memcube serve --workers``): new cubes need a
            server-backed ``cube_config``, and are refused (501) without one.
        fast_path: search and add requests that :mod:`.fastpath` can vouch for skip FastAPI's dependency
            solving (the same answers; False only to measure what it saves).
        search_threads: worker threads of the fast search fronts' own pool (:mod:`.search_front`); 0: AnyIO's.

    Returns:
        The ASGI app (run it with uvicorn; ``memcube serve`` does).
    """
    limits = limits or Limits()
    service = Service(mos, keys, cube_config=cube_config, shared=shared)
    buckets = RateBuckets(keys.db) if limits.rate > 0 else None  # in the home's mos.db: one limit for every worker
    limiter = RateLimiter(limits.rate, limits.burst, buckets, lease=limits.lease)  # a mos.db write per lease, not per request
    authenticator = Authenticator(keys, limiter, cache_seconds=limits.key_cache_seconds)
    app = FastAPI(
        title="memos-integrations memory service",
        version="1",
        description="REST over MOS: memories, cubes, sharing, search, chat with memory. Every /v1 route needs an API key.",
    )
    app.router.route_class = StrictJSONRoute  # NaN / Infinity in a body: a 422, never a stored poison
    app.state.service = service
    app.state.authenticator = authenticator
    # refusals counted but not yet written (the audit throttle) reach the log when the app stops
    app.router.on_shutdown.append(lambda: authenticator.flush_suppressed(force=True))
    app.state.limits = limits
    errors.install(app)

    async def principal(
        request: Request,
        _b: Annotated[Any, Depends(_bearer)] = None,
        _k: Annotated[Any, Depends(_api_key)] = None,
    ) -> Principal:
        # async: a cached key costs no hop to the worker-thread pool (only the route itself runs there)
        who = await authenticator.authenticate_async(request.headers)
        check_path_ids(request.path_params)  # every /v1 route: an id in the path is bounded as a body id
        cache_scope.enter(who.user_id)  # this request's query vectors are cached for this user only
        return who

    Auth = Annotated[Principal, Depends(principal)]
    CubeQ = Annotated[str | None, Query(min_length=1, max_length=256, description="default: your default cube")]
    UserQ = Annotated[str | None, Query(min_length=1, max_length=256, description="act as this user (admin keys only)")]
    SessionQ = Annotated[str | None, Query(min_length=1, max_length=256)]  # SearchIn's bound: longer was a 500

    def ok(data: Any, status: int = 200) -> JSONResponse:
        return _JSON(data, status_code=status)

    # -- memories --------------------------------------------------------------------------------
    @app.post("/v1/memories", status_code=201, response_model=None, tags=["memories"],
              responses={201: {"model": models.Items, "links": {
                  name: {"operationId": op, "parameters": {"item_id": "$response.body#/items/0/id"}}
                  for name, op in (("GetMemory", "get_memory"), ("UpdateMemory", "update_memory"),
                                   ("DeleteMemory", "delete_memory"), ("MemoryHistory", "memory_history"))}}, **ERRORS})
    def add_memory(body: models.AddIn, who: Auth, idempotency_key: Annotated[str | None, Header(
            description="a random id per add: a retry with it is answered, never written twice (24 h)")] = None,
    ) -> JSONResponse:
        """Add a memory text, or chat messages (one memory each), to a cube you may write."""
        user = service.actor(who, body.user_id)
        agent = service.agent(who, body.agent_id)
        if body.mode != "fast" and not service.add_has_mode:
            raise UnsupportedError(f"mode {body.mode!r} needs the memory reader, which this version does not have; use mode 'fast'")
        view = service.view(user, body.cube_id, "write", create=True)
        assert view is not None
        # acknowledged on the SQLite commit, the vector index written in background batches (read-your-writes kept)
        defer_writes(service.mos._cube(view.cube_id).text_mem)
        kw: dict[str, Any] = {"agent_id": agent, "session_id": body.session_id, "tags": body.tags,
                              "timestamp": body.timestamp, "principal": service.principal_name(who, user)}
        if service.add_has_mode:
            kw["mode"] = body.mode
        def add() -> dict[str, Any]:
            if body.messages is not None:
                msgs = [m.model_dump(exclude_none=True) for m in body.messages]
                return {"items": [item_json(i) for i in view.add(messages=msgs, **kw)]}
            items = view.add(memory=body.text, kind=body.kind or "fact", metadata=body.metadata, **kw)
            return {"items": [item_json(i) for i in items]}

        mem = service.mos._cube(view.cube_id).text_mem
        return ok(idempotent.add_once(mem, user, agent, idempotency_key, body, add), 201)

    def _search(who: Principal, q: models.SearchIn) -> Prepared:
        """The search routes in two steps (search_front.two_step): every refusal first, the search in ``answer``."""
        if q.k > limits.max_k:
            raise InvalidInputError(f"k may be at most {limits.max_k}; page through results with a narrower query")
        user = service.actor(who, q.user_id)
        view = service.view(user, q.cube_id, "read")  # another user's cube and no such cube: one refusal, one path
        if view is None:
            return Prepared(lambda: ok({"hits": []}), searches=False)

        def answer() -> JSONResponse:
            with search_plan(q.plan):  # a late search embeds in fp32 (late_embed.py)
                hits = view.search(q.query, top_k=q.k, session_id=q.session_id, agent_id=q.agent_id, kinds=q.kinds,
                                   tags=q.tags, metadata=q.metadata, plan=q.plan, time_from=q.time_from,
                                   time_to=q.time_to, now=q.now or q.as_of, as_of=q.as_of,
                                   current_session=q.current_session)
            return ok(search_answer(view, hits, q.conflicts))
        return Prepared(answer)

    @app.post("/v1/memories/search", response_model=None, tags=["memories"], responses={200: {"model": models.Hits}, **ERRORS})
    def search_memories(body: models.SearchIn, who: Auth) -> Response:
        """Hybrid search of one cube (plans, filters, ``as_of``)."""
        return _search_post(body, who).answer()

    def _search_post(body: models.SearchIn, who: Principal) -> Prepared:
        return _search(who, body)

    def _search_get(who: Principal, q: str, k: int, session_id: str | None, cube_id: str | None,
                    user_id: str | None) -> Prepared:
        return _search(who, models.SearchIn(query=q, k=k, session_id=session_id, cube_id=cube_id, user_id=user_id))

    @app.get("/v1/memories/search", response_model=None, tags=["memories"], responses={200: {"model": models.Hits}, **ERRORS})
    def search_memories_get(
        who: Auth, q: Annotated[str, Query(min_length=1)], k: Annotated[int, Query(ge=1)] = 10,
        session_id: SessionQ = None, cube_id: CubeQ = None, user_id: UserQ = None,
    ) -> Response:
        """Search with query parameters (``q``, ``k``)."""
        return _search_get(who, q, k, session_id, cube_id, user_id).answer()

    # the fast front runs the checks before it embeds (search_front.py); the hints: what of a request _search checks
    two_step(search_memories, _search_post, lambda a: (a["body"].k, a["body"].cube_id, a["body"].user_id))
    two_step(search_memories_get, _search_get, lambda a: (a.get("k"), a.get("cube_id"), a.get("user_id")))

    @app.get("/v1/memories", response_model=None, tags=["memories"], responses={200: {"model": models.Page}, **ERRORS})
    def list_memories(
        who: Auth, limit: Annotated[int, Query(ge=1)] = 50, cursor: Annotated[str | None, Query(max_length=64)] = None,
        session_id: SessionQ = None, cube_id: CubeQ = None, user_id: UserQ = None,
    ) -> JSONResponse:
        """A page of live memories, oldest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
        if limit > limits.max_page:
            raise InvalidInputError(f"limit may be at most {limits.max_page}; follow next_cursor for more")
        offset = _decode_cursor(cursor)
        user = service.actor(who, user_id)
        view = service.view(user, cube_id, "read")
        if view is None:
            return ok({"items": [], "next_cursor": None})
        items = view.get_all(session_id=session_id, limit=limit + 1, offset=offset)
        more = len(items) > limit
        return ok({"items": [item_json(i) for i in items[:limit]], "next_cursor": _encode_cursor(offset + limit) if more else None})

    def _item_view(who: Principal, cube_id: str | None, user_id: str | None, need: str) -> Any:
        user = service.actor(who, user_id)
        view = service.view(user, cube_id, need)
        if view is None:
            raise ItemNotFoundError("no such memory; you have no cube yet (POST /v1/memories creates it)")
        return user, view

    @app.get("/v1/memories/{item_id}", response_model=None, tags=["memories"], operation_id="get_memory",
             responses={200: {"model": models.Item}, **ERRORS})
    def get_memory(item_id: str, who: Auth, cube_id: CubeQ = None, user_id: UserQ = None) -> JSONResponse:
        _, view = _item_view(who, cube_id, user_id, "read")
        return ok(item_json(view.get(item_id)))

    @app.patch("/v1/memories/{item_id}", response_model=None, tags=["memories"], operation_id="update_memory", responses={200: {"model": models.Item}, **ERRORS})
    def update_memory(item_id: str, body: models.PatchIn, who: Auth, cube_id: CubeQ = None, user_id: UserQ = None) -> JSONResponse:
        """Write a new version (``expected_version`` makes it conditional: 409 if another write came first)."""
        user, view = _item_view(who, cube_id, user_id, "write")
        changes = body.model_dump(exclude_none=True, exclude={"expected_version"})
        item = view.update(item_id, principal=service.principal_name(who, user), expected_version=body.expected_version, **changes)
        return ok(item_json(item))

    @app.delete("/v1/memories/{item_id}", response_model=None, tags=["memories"], operation_id="delete_memory", responses={200: {"model": models.Deleted}, **ERRORS})
    def delete_memory(item_id: str, who: Auth, cube_id: CubeQ = None, user_id: UserQ = None) -> JSONResponse:
        """Forget a memory (a tombstone: its versions stay in its history)."""
        user, view = _item_view(who, cube_id, user_id, "write")
        n = view.delete(item_id, principal=service.principal_name(who, user))
        if n == 0:
            raise ItemNotFoundError(f"no live memory {item_id!r} in this cube (deleted, or never added)")
        return ok({"deleted": n})

    @app.get("/v1/memories/{item_id}/history", response_model=None, tags=["memories"], operation_id="memory_history",
             responses={200: {"model": models.Versions}, **ERRORS})
    def memory_history(item_id: str, who: Auth, cube_id: CubeQ = None, user_id: UserQ = None) -> JSONResponse:
        _, view = _item_view(who, cube_id, user_id, "read")
        return ok({"versions": [item_json(v) for v in view.history(item_id)]})

    @app.post("/v1/feedback", response_model=None, tags=["memories"], responses={200: {"model": models.Items}, **ERRORS})
    def feedback(body: models.FeedbackIn, who: Auth) -> JSONResponse:
        """Correct memories in words ("I no longer live in Paris"); needs the memory reader's feedback API."""
        user = service.actor(who, body.user_id)
        fn: Callable[..., Any] | None = getattr(mos, "feedback", None)
        if fn is None:
            raise UnsupportedError("feedback needs the memory reader (MOS.feedback), which this version does not have; "
                                   "correct a memory with PATCH /v1/memories/{id} instead")
        view = service.view(user, body.cube_id, "write", create=True)
        assert view is not None
        result = fn(body.text, user_id=user, mem_cube_id=view.cube_id, session_id=body.session_id)
        changed = result if isinstance(result, list) else []
        return ok({"items": [item_json(i) for i in changed if hasattr(i, "to_dict")]})

    # -- cubes and sharing -----------------------------------------------------------------------
    @app.get("/v1/cubes", response_model=None, tags=["cubes"], responses={200: {"model": models.Cubes}, **ERRORS})
    def list_cubes(who: Auth, user_id: UserQ = None) -> JSONResponse:
        return ok({"cubes": mos.list_cubes(service.actor(who, user_id))})

    @app.post("/v1/cubes", status_code=201, response_model=None, tags=["cubes"], responses={201: {"model": models.CubeOut}, **ERRORS})
    def create_cube(body: models.CubeIn, who: Auth, user_id: UserQ = None) -> JSONResponse:
        """Create a cube you own (an id someone else took is a 409 that says no more)."""
        return ok(service.create_cube(service.actor(who, user_id), body.cube_id), 201)

    @app.post("/v1/cubes/{cube_id}/share", response_model=None, tags=["cubes"], responses={200: {"model": models.Status}, **ERRORS})
    def share_cube(cube_id: str, body: models.ShareIn, who: Auth) -> JSONResponse:
        """Share a cube you own with another user, for ``read`` or ``write``."""
        user = service.actor(who, None)
        service.guard(user, cube_id, lambda: mos.share_cube_with_user(cube_id, body.user_id, body.access, user_id=user))
        return ok({"status": "shared"})

    @app.delete("/v1/cubes/{cube_id}/share/{user_id}", response_model=None, tags=["cubes"],
                responses={200: {"model": models.Status}, **ERRORS})
    def unshare_cube(cube_id: str, user_id: str, who: Auth) -> JSONResponse:
        user = service.actor(who, None)
        service.guard(user, cube_id, lambda: mos.unshare_cube(cube_id, user_id, user_id=user))
        return ok({"status": "unshared"})

    # -- users, audit, stats, export/import ------------------------------------------------------
    @app.get("/v1/users/me", response_model=None, tags=["users"], responses={200: {"model": models.Me}, **ERRORS})
    def me(who: Auth) -> JSONResponse:
        row = next(u for u in mos.list_users(user_id=who.user_id) if u["user_id"] == who.user_id)
        return ok({**row, "agent_id": who.agent_id, "key_id": who.key_id, "cubes": mos.list_cubes(who.user_id)})

    @app.get("/v1/audit", response_model=None, tags=["users"], responses={200: {"model": models.AuditOut}, **ERRORS})
    def audit(
        who: Auth, limit: Annotated[int, Query(ge=1, le=1000)] = 100, cube_id: CubeQ = None,
        scope: Annotated[str, Query(pattern="^(cube|mos|keys)$")] = "cube",
    ) -> JSONResponse:
        """A cube's audit log (its owner), the MOS log (admins), or the key log (yours; every key's for admins)."""
        user = who.user_id
        if scope == "mos":
            return ok({"entries": mos.audit_log(user_id=user, limit=limit)})
        if scope == "keys":
            return ok({"entries": keys.audit_log(limit, principal=None if service.is_admin(user) else user)})
        view = service.view(user, cube_id, "owner")
        return ok({"entries": [] if view is None else view.audit_log(limit)})

    @app.get("/v1/stats", response_model=None, tags=["users"], responses={200: {"model": models.StatsOut}, **ERRORS})
    def stats(who: Auth, cube_id: CubeQ = None, user_id: UserQ = None) -> JSONResponse:
        """Counts by state and kind for one cube (no server paths)."""
        view = service.view(service.actor(who, user_id), cube_id, "read")
        if view is None:
            return ok({"cube_id": None, "items": 0, "by_state": {}, "by_kind": {}})
        found = view.stats()
        found.pop("path", None)
        return ok(found)

    @app.post("/v1/export", response_model=None, tags=["cubes"], responses={200: {"model": models.ExportOut}, **ERRORS})
    def export(body: models.ExportIn, who: Auth) -> JSONResponse:
        """Every version and edge of a cube, as the rows ``memcube export`` writes (lossless)."""
        view = service.view(service.actor(who, body.user_id), body.cube_id, "read")
        if view is None:
            return ok({"cube_id": None, "rows": []})
        rows = view.export_jsonl()
        assert not isinstance(rows, int)  # no path: the rows themselves
        return ok({"cube_id": view.cube_id, "rows": list(rows)})

    @app.post("/v1/import", response_model=None, tags=["cubes"], responses={200: {"model": models.ImportOut}, **ERRORS})
    def import_rows(body: models.ImportIn, who: Auth) -> JSONResponse:
        """Load exported rows into a cube you may write; one bad row refuses them all (nothing is written)."""
        view = service.view(service.actor(who, body.user_id), body.cube_id, "write", create=True)
        assert view is not None
        with tempfile.TemporaryDirectory(prefix="memos-import-") as tmp:
            path = Path(tmp) / "rows.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in body.rows), encoding="utf-8")
            n = view.import_jsonl(path)
        return ok({"cube_id": view.cube_id, "imported": n})

    # -- chat, health ----------------------------------------------------------------------------
    from .chat import install as install_chat

    install_chat(app, service, principal)  # type: ignore[arg-type]  # an async dependency; FastAPI awaits it
    from .routes_store import router as face_routes

    app.include_router(face_routes(service, principal, authenticator.charge))  # type: ignore[arg-type]
    app.include_router(vector_routes(service, principal, limits))  # type: ignore[arg-type]
    _import_faces()

    @app.get("/healthz", response_model=models.Status, tags=["health"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=models.Status, tags=["health"], responses={503: {"model": models.ErrorOut}})
    def readyz() -> dict[str, str]:
        """The registry database answers (a 503 otherwise)."""
        try:
            keys.db.scalar("SELECT 1")
        except (MemosError, OSError) as exc:
            raise BackendError(f"the MOS registry is not readable ({type(exc).__name__}); check the home directory") from None
        return {"status": "ready"}

    # the hot routes answer requests they can vouch for without FastAPI's dependency solving (fastpath.py)
    def authenticate_scoped(headers: Any) -> Principal:
        """What ``principal`` does for the fast fronts (no path ids there): the key, then the cache scope."""
        who = authenticator.authenticate(headers)
        cache_scope.enter(who.user_id)
        return who

    if fast_path:
        # searches: the key and the query embedding awaited on the loop, the route on a few threads (search_front.py)
        searches = SearchFront(authenticator.authenticate_async, mos.embedder, threads=search_threads,
                               still_valid=lambda h: authenticator.cached(token_of(h)) or authenticator.verify(token_of(h)))
        app.router.on_shutdown.append(searches.close)
        app.state.searches = searches
        fastpath.install(app, authenticate=authenticate_scoped, search_get=search_memories_get,
                         search_post=search_memories, add=add_memory, search_in=models.SearchIn, add_in=models.AddIn,
                         searches=searches)
    if mcp:
        _mount_mcp(app, mos, authenticator)
    if limits.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(limits.cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes)
    app.add_middleware(SlowBodyMiddleware)  # a body that stalls: 408, the connection let go (slow_clients.py)
    app.add_middleware(AccessLogMiddleware)  # inside the request id's, so its line carries the id (access_log.py)
    app.router.on_startup.append(take_over_uvicorn)  # uvicorn's own line carried the query string: the user's text
    app.add_middleware(errors.RequestIdMiddleware)
    return app


#: what the face routes import; a missing extra stays the route's own 501
_FACE_MODULES = ("langgraph.store.base", "langchain_core.messages", "llama_index.core.vector_stores.types",
                 "memos_integrations.langgraph.access", "memos_integrations.langgraph.store",
                 "memos_integrations.langchain.chat_history", "memos_integrations.langchain.vectorstore",
                 "memos_integrations.llama_index.chat_store", "memos_integrations.llama_index.kvstore",
                 "memos_integrations.llama_index.vector_store", "memos_integrations.llama_index.wire")


def _import_faces() -> None:
    """Import the faces the routes run now, in this one thread.

    Why: the routes run in a pool of worker threads; when a fresh process's first requests to several
    face routes arrived together, their first imports raced, and a thread could see a partially
    initialised module (500s, or a 501 claiming the extra is missing).
    """
    import importlib

    for name in _FACE_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _mount_mcp(app: FastAPI, mos: MOS, authenticator: Authenticator) -> None:
    """Mount the MCP endpoint (module ``server.mcp``) at ``/mcp`` if that module is present.

    It shares the REST keys and rate limits: its ``resolve_user(headers)`` is this app's key check. Mounted
    apps get no ASGI lifespan of their own, so the endpoint's ``lifespan()`` (if it has one) runs inside this app's.
    """
    import importlib
    import importlib.util

    if importlib.util.find_spec(f"{__package__}.mcp") is None:
        return
    mcp_module = importlib.import_module(f"{__package__}.mcp")

    def check(headers: Any) -> tuple[str, str | None]:
        """Once per HTTP request to /mcp: the key, and one token from its rate bucket."""
        who = authenticator.authenticate(headers or {})
        return who.user_id, who.agent_id  # an agent's key stays bound to its agent on /mcp too

    def resolve_user(headers: Any) -> tuple[str, str | None]:
        """A tool's own lookup, inside a request ``check`` passed: the key again, no second rate token."""
        token = token_of(headers or {})
        who = authenticator.cached(token) or authenticator.verify(token)
        return who.user_id, who.agent_id

    sub = mcp_module.mcp_http_app(mos, resolve_user, check=check)
    app.mount("/mcp", sub)
    inner = getattr(sub, "lifespan", None)
    if callable(inner):
        outer = app.router.lifespan_context

        @asynccontextmanager
        async def both(parent: Any) -> AsyncIterator[Any]:
            async with outer(parent) as state, inner():
                yield state

        app.router.lifespan_context = both


class _JSON(JSONResponse):
    """JSON with datetimes as ISO 8601 (audit entries carry them) and any other value as its string."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_plain).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith("o:") and text[2:].isdigit():
            return int(text[2:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidInputError("cursor is not one this service gave out; pass next_cursor from the previous page, or none")
