"""Structured JSON errors and request ids for the memory service.

Every error the service answers has the body ``{"error": {"type", "message", "request_id"}}``: ``type``
is the name of a :class:`~memos_integrations.errors.MemosError` subclass (the ones below are the
service's own), ``message`` says what to do. Every response carries an ``X-Request-ID`` header (the
client's, when it sent a sane one). A bad request is a 4xx; a 500 means a bug in the service and says
so, without the exception's text.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import (
    AccessDeniedError,
    BackendError,
    ConflictError,
    CubeLockedError,
    CubeNotFoundError,
    InvalidInputError,
    InvalidTypeError,
    ItemNotFoundError,
    MemosError,
    OversizedInputError,
    UnknownUserError,
)

log = logging.getLogger(__name__)

REQUEST_ID = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class AuthenticationError(AccessDeniedError):
    """No API key, or one that is malformed, unknown, revoked or expired (the service says no more)."""


class RateLimitedError(MemosError, RuntimeError):
    """This key sent more requests than its rate allows; wait ``Retry-After`` seconds."""


class UnsupportedError(MemosError, NotImplementedError):
    """The service cannot do this here (a feature that has not landed, or no chat model configured)."""


class RouteNotFoundError(MemosError, LookupError):
    """No such route; the OpenAPI schema at /openapi.json lists them."""


class MethodNotAllowedError(MemosError, LookupError):
    """The route exists but not for this HTTP method."""


class InternalError(MemosError, RuntimeError):
    """A bug in the service (never bad input); the request id finds it in the server log."""


#: status per error class; the first class in the MRO that is listed wins
STATUS: dict[type[BaseException], int] = {
    AuthenticationError: 401,
    AccessDeniedError: 403,
    CubeNotFoundError: 404,
    ItemNotFoundError: 404,
    UnknownUserError: 404,
    RouteNotFoundError: 404,
    MethodNotAllowedError: 405,
    ConflictError: 409,
    CubeLockedError: 409,
    OversizedInputError: 413,
    InvalidInputError: 422,
    InvalidTypeError: 422,
    RateLimitedError: 429,
    UnsupportedError: 501,
    BackendError: 503,
    InternalError: 500,
}


def _documented() -> dict[int | str, dict[str, Any]]:
    from .models import ErrorOut

    return {code: {"model": ErrorOut, "description": text} for code, text in (
        (401, "no API key, or not an active one"), (403, "the key may not do this"),
        (404, "no such cube or memory among those you reach"), (409, "a concurrent change, or a taken id; re-read and retry"),
        (413, "the body is too large"), (422, "invalid input"), (429, "rate limited; see Retry-After"),
        (501, "not available in this version or configuration"), (503, "a backend is unreachable"),
    )}


#: the error responses every /v1 route documents in the OpenAPI schema
ERRORS = _documented()


def status_of(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400  # any other MemosError is something the caller can fix


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def body(kind: str, message: str, rid: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message, "request_id": rid}}


def error_response(exc: MemosError, rid: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body(type(exc).__name__, str(exc), rid), status_code=status_of(exc),
                        headers={REQUEST_ID: rid, **(headers or {})})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "") + "; see /openapi.json for the request shape"


def _json_message(exc: RequestValidationError) -> str:
    from .json_body import NOT_FINITE

    if any((e.get("ctx") or {}).get("error") == NOT_FINITE for e in exc.errors()):
        return f"the body is not valid JSON: {NOT_FINITE}"
    return "the body is not valid JSON; send a JSON object with Content-Type: application/json"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the structured body."""

    @app.exception_handler(MemosError)
    async def memos_error(request: Request, exc: MemosError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimitedError) and hasattr(exc, "retry_after") else None
        return error_response(exc, request_id(request), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        malformed = any(e.get("type") == "json_invalid" for e in exc.errors())
        kind = InvalidInputError if malformed else InvalidTypeError
        message = (_json_message(exc) if malformed else _validation_message(exc))
        return error_response(kind(message), request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        limit = getattr(request.state, "body_too_big", None)
        if limit is not None:
            from .limits import too_big_message

            return error_response(OversizedInputError(too_big_message(limit)), request_id(request))
        if exc.status_code == 404:
            err: MemosError = RouteNotFoundError(f"no route {request.url.path}; /openapi.json lists the routes")
        elif exc.status_code == 405:
            err = MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}; /openapi.json lists the methods")
        elif exc.status_code == 400:  # FastAPI could not read the body (not UTF-8, not JSON)
            err = InvalidInputError("the body could not be read as JSON; send UTF-8 JSON with Content-Type: application/json")
        else:
            err = InvalidInputError(str(exc.detail))
            return JSONResponse(body(type(err).__name__, str(err), request_id(request)), status_code=exc.status_code,
                                headers={REQUEST_ID: request_id(request)})
        return error_response(err, request_id(request))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.error("request %s failed: %s", rid, type(exc).__name__, exc_info=exc)
        return error_response(InternalError(f"the service failed on this request (a bug, not your input); "
                                            f"report request id {rid}"), rid)


class RequestIdMiddleware:
    """Give every request an id (the client's ``X-Request-ID`` if sane, else a new one) and echo it back.

    Pure ASGI, so streamed responses pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), "")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
