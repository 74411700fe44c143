"""The service's access log: one line per HTTP request, without the query string.

Why not uvicorn's: its access log writes the request line as sent, query string included, and a search's
query string is the user's own text (``GET /v1/memories/search?q=...``), so memories' wording ended up in
the server's log at the default level (info). It also cost a little more: 12-13 us of CPU per request against
8.6 for this middleware and its line (``python -m benchmarks.bench_service_costs``); a search costs ~7 ms of
CPU, so neither is material to throughput.
``memcube serve`` turns uvicorn's off and installs this one (:func:`memos_integrations.server.app.create_app`).

A line: ``<method> <path> <status> <ms>ms <request id>``, logged at INFO to the ``memos_integrations.access``
logger (configure or silence it as any logger; nothing is formatted when INFO is off for it). When the app
starts under uvicorn with uvicorn's access log on (``memcube serve``, ``--log-level info``, the default),
:func:`take_over_uvicorn` moves that log here: uvicorn's access logger loses its handlers (so uvicorn writes
no line of its own: it checks for handlers per connection) and this logger writes to the same stream, with
uvicorn's level prefix. ``--log-level warning`` (or uvicorn's ``--no-access-log``) leaves both off. The path is
percent-quoted as uvicorn quotes it, so a path cannot write a second line; the request id is the sane one
:class:`~.errors.RequestIdMiddleware` settled on. A request whose app raised before answering logs 500 (what
the client gets from Starlette's error middleware); a client gone before an answer logs status 0.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOGGER = logging.getLogger("memos_integrations.access")


class AccessLogMiddleware:
    """Log one line per HTTP request when the ``memos_integrations.access`` logger has INFO on (module docstring)."""

    def __init__(self, app: ASGIApp, logger: logging.Logger = LOGGER) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 0

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        except Exception:  # re-raised: Starlette's error middleware answers it with a 500
            status = status or 500
            raise
        finally:
            rid = scope.get("state", {}).get("request_id", "-")
            self.logger.info("%s %s %d %.1fms %s", scope["method"], quote(scope["path"]), status,
                             (time.perf_counter() - start) * 1e3, rid)


def take_over_uvicorn() -> None:
    """Write uvicorn's access log through :class:`AccessLogMiddleware` instead (module docstring); a no-op unless
    uvicorn's access logger is on. Handlers someone else put on ``memos_integrations.access`` are kept as they are;
    the one this function added before (an earlier app in the process) is replaced by one on uvicorn's stream now."""
    uvicorn_access = logging.getLogger("uvicorn.access")
    if not uvicorn_access.handlers or not uvicorn_access.isEnabledFor(logging.INFO):
        return
    streams = [h.stream for h in uvicorn_access.handlers if isinstance(h, logging.StreamHandler)]
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    for old in [h for h in LOGGER.handlers if getattr(h, _OURS, False)]:
        LOGGER.removeHandler(old)
    if LOGGER.handlers or not streams:
        return
    try:
        from uvicorn.logging import DefaultFormatter

        formatter: logging.Formatter = DefaultFormatter("%(levelprefix)s %(message)s")
    except ImportError:  # uvicorn without its formatter: a plain prefix
        formatter = logging.Formatter("%(levelname)s: %(message)s")
    handler = logging.StreamHandler(streams[0])
    handler.setFormatter(formatter)
    setattr(handler, _OURS, True)
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


_OURS = "_memos_access_log"  # marks the handler take_over_uvicorn added
