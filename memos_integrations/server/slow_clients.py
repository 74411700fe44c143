"""A client that stops sending its request body is answered 408 and let go, instead of held for ever.

Why: uvicorn reads a body as it arrives and has no timeout while it waits for the next piece (its
``timeout_keep_alive`` only runs *between* requests). A client that sends the headers and part of the
body, then stalls, blocks nobody else (the wait is on the event loop, not in a worker thread), but it
holds its connection and its request open for as long as it likes; enough of them exhaust the server's
file descriptors (slowloris). Here each wait for the next piece of the body is bounded by ``timeout``
seconds (30) and the whole body by ``BODY_DEADLINE`` (120: a 1 MiB body at 10 KB/s); past either the request ends with a structured ``408`` (``InvalidInputError``, "send the body
without pausing") and ``Connection: close``. Nothing was written: a route runs only once its whole
body is read.

What this does not cover: a client that stalls *inside the headers* never reaches the app; bound that
in front of uvicorn (a reverse proxy's header timeout, e.g. nginx ``client_header_timeout``) or cap
connections with uvicorn's ``--limit-concurrency``. After the body is complete nothing is timed: a
streamed answer (``/v1/chat/completions``) may take as long as the model takes.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: seconds one wait for the next piece of a request body may take
BODY_TIMEOUT = 30.0
#: seconds the whole body may take (a client trickling one byte every 29 s is still let go)
BODY_DEADLINE = 120.0


class SlowBodyMiddleware:
    """Answer 408 when a request body stalls for more than ``timeout`` seconds between two pieces."""

    def __init__(self, app: ASGIApp, timeout: float | None = None) -> None:
        self.app, self._timeout = app, timeout

    @property
    def timeout(self) -> float:
        """The given timeout, else the module's ``BODY_TIMEOUT`` as it is now (tests shorten it)."""
        return BODY_TIMEOUT if self._timeout is None else self._timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        done = False  # the whole body is in: later receives (disconnect checks while streaming) wait freely
        stalled = False
        started = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BODY_DEADLINE

        async def timed() -> Message:
            nonlocal done, stalled
            if done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(self.timeout, deadline - loop.time())))
            except asyncio.TimeoutError:
                stalled = True
                raise _Stalled from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if stalled:  # the app answered the failed read (FastAPI's 400): send the 408 instead, once
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(scope, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed, tracked)
        except _Stalled:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        rid = str(scope.get("state", {}).get("request_id", ""))
        payload = json.dumps({"error": {
            "type": "InvalidInputError", "request_id": rid,
            "message": f"the request body stopped arriving for {self.timeout:g} s, or took over {BODY_DEADLINE:g} s in "
                       "all; send the body without pausing"}}).encode()
        await send({"type": "http.response.start", "status": 408, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", rid.encode("latin-1")), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


class _Stalled(Exception):
    """Raised inside the app's receive() when the body stalls."""
