"""A shorter way through FastAPI for the hot routes (search and add), for requests it can vouch for.

Why: on the 2-core development machine (shared, load average 6-10) a search cost the serving process's
event loop 1.0-1.6 ms of CPU, and FastAPI's dependency solving (the query parameters one by one, the
two security schemes, the key) was about half of it; through the front it costs 0.5-0.7 ms
(``python -m benchmarks.bench_service --no-fast-path`` measures both ways). At 200 searches/s every
millisecond of the event loop is a fifth of a core.

What it does: each hot route keeps its FastAPI route (the OpenAPI schema, the validation, every error
answer), and its ASGI app gets a front (:func:`install`). The front reads the request itself and, only
when every parameter is one it can check exactly as the route's declaration would (no unknown or
repeated query parameter, ``k`` a plain decimal, ids within their lengths, a JSON object body that the
route's own pydantic model accepts, no ``Idempotency-Key`` header on an add), authenticates the key with the same :class:`~.auth.Authenticator`
call and runs the route's own function in the same worker-thread pool (a search: the key checked and its
query embedded on the event loop, the route on the searches' own threads, :mod:`.search_front`). Everything else (a missing
parameter, a malformed body, a wrong type) goes to the FastAPI route unchanged, with the body it read
handed back, so every error answer stays the one FastAPI gives: the front only ever answers requests
the route would have answered the same way, by running the same function.

Order of checks, as in FastAPI: the body is read and parsed first (a read that fails is the same
``400`` FastAPI raises, which the body-limit and slow-body middlewares turn into 413 / 408), then the
key and its rate token, then the route (the last three in one worker-thread call, where FastAPI's path
hops to a thread once more for the rate token). Exceptions raised here (a refused key, a
``MemosError`` from the route) reach the app's exception handlers exactly as when raised in the route.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import InternalError
from .json_body import loads
from .search_front import SearchFront

#: ``k`` as FastAPI reads it in every spelling the front accepts (others go to FastAPI)
_K = re.compile(r"[1-9][0-9]{0,8}")
#: query parameters of ``GET /v1/memories/search`` and the longest value each may have (None: no limit)
_SEARCH_GET = {"q": None, "k": None, "session_id": 256, "cube_id": 256, "user_id": 256}

Authenticate = Callable[[Any], Any]
Fast = Callable[[Request, bytes | None], Awaitable[Response | None]]


def install(app: FastAPI, *, authenticate: Authenticate, search_get: Callable[..., Response],
            search_post: Callable[..., Response], add: Callable[..., Response],
            search_in: type[BaseModel], add_in: type[BaseModel], searches: SearchFront | None = None) -> None:
    """Put the fast fronts before the FastAPI routes ``GET /v1/memories/search``, ``POST /v1/memories/search``
    and ``POST /v1/memories``.

    Args:
        app: the service app, its routes already declared.
        authenticate: request headers -> principal (``Authenticator.authenticate``: the rate token taken;
            the app's version also scopes the query caches to the user as ``principal`` does), called in
            the worker thread that then runs the route: one hop to the thread pool per request
            (FastAPI's path makes a second one for the rate token when rate limits are on).
        search_get, search_post, add: the routes' own functions (run in the worker-thread pool).
        search_in, add_in: the body models of the two POST routes.
        searches: how the two search fronts run (:mod:`.search_front`: the key checked and the query
            embedded on the event loop, the route on a few threads); None: as the add front does.
    """
    async def get_search(request: Request, _: bytes | None) -> Response | None:
        args = _search_query(request.scope.get("query_string", b""))
        if args is None:
            return None
        if searches is not None:
            return await searches.run(request.headers, search_get, args, args["q"], None)
        return await run_in_threadpool(_as_caller, authenticate, request.headers, search_get, args)

    def posted(endpoint: Callable[..., Response], model: type[BaseModel]) -> Fast:
        async def fast(request: Request, body: bytes | None) -> Response | None:
            parsed = _model(body, model)
            if parsed is None:
                return None
            return await run_in_threadpool(_as_caller, authenticate, request.headers, endpoint, {"body": parsed})
        return fast

    async def post_search(request: Request, body: bytes | None) -> Response | None:
        parsed = _model(body, search_in)
        if parsed is None:
            return None
        if searches is not None:
            query, plan = getattr(parsed, "query", None), getattr(parsed, "plan", None)
            return await searches.run(request.headers, search_post, {"body": parsed}, query, plan)
        return await run_in_threadpool(_as_caller, authenticate, request.headers, search_post, {"body": parsed})

    add_posted = posted(add, add_in)

    async def add_front(request: Request, body: bytes | None) -> Response | None:
        if "idempotency-key" in request.headers:  # a keyed add: the route's header validation and record
            return None
        return await add_posted(request, body)

    fronts: dict[tuple[str, str], tuple[Fast, bool]] = {
        ("GET", "/v1/memories/search"): (get_search, False),
        ("POST", "/v1/memories/search"): (post_search, True),
        ("POST", "/v1/memories"): (add_front, True),
    }
    for route in app.router.routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods or ():
            found = fronts.pop((method, route.path), None)
            if found is not None:
                route.app = _front(route.app, method, *found)
    if fronts:  # a route was renamed: the front would silently not apply
        raise InternalError(f"fast paths without a route: {sorted(fronts)}; rename them in server/fastpath.py too")


def _as_caller(authenticate: Authenticate, headers: Any, endpoint: Callable[..., Response],
               args: dict[str, Any]) -> Response:
    """In the worker thread: the key (cached, or read from the key store), its rate token, then the route."""
    return endpoint(who=authenticate(headers), **args)


def _front(slow: ASGIApp, method: str, fast: Fast, reads_body: bool) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != method or (reads_body and not _json_content(scope)):
            await slow(scope, receive, send)
            return
        request = Request(scope, receive, send)
        body = None
        if reads_body:
            try:
                body = await request.body()
            except Exception as exc:  # what FastAPI raises on a failed read; the middlewares refine it (413, 408)
                raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc
        response = await fast(request, body)
        if response is None:
            await slow(scope, receive if body is None else _replay(body, receive), send)
            return
        await response(scope, receive, send)
    return app


def _json_content(scope: Scope) -> bool:
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            return bool(value.lower() == b"application/json")
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the FastAPI route after the front read the body: the body once, then the client's."""
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _search_query(raw: bytes) -> dict[str, Any] | None:
    """The keyword arguments of ``GET /v1/memories/search`` when FastAPI would read the query string the same
    way; None for anything else (FastAPI then answers, errors included)."""
    args: dict[str, Any] = {}
    for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if name not in _SEARCH_GET or name in args or not value:
            return None
        longest = _SEARCH_GET[name]
        if longest is not None and len(value) > longest:
            return None
        args[name] = value
    if "q" not in args:
        return None
    k = args.get("k")
    if k is not None:
        if not _K.fullmatch(k):
            return None
        args["k"] = int(k)
    return args


def _model(body: bytes | None, model: type[BaseModel]) -> BaseModel | None:
    """``body`` as ``model`` when it is strict JSON (:func:`.json_body.loads`) that the model accepts; else None."""
    if not body:
        return None
    try:
        return model.model_validate(loads(body))
    except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
