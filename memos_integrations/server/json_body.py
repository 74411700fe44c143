"""Request bodies as strict JSON: ``NaN``, ``Infinity`` and numbers beyond a float's range are refused.

Why: Python's ``json`` module reads the non-standard ``NaN`` / ``Infinity`` literals (and turns ``1e400``
into ``inf``), so without this a client could store a value that no later response can carry (the
service writes strict JSON), and every read of it would fail. Refusing it while the body is parsed
covers every route at once, before anything is written: a 422 ``InvalidInputError``.

Every router of the app uses :class:`StrictJSONRoute` (``APIRouter(route_class=...)``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from fastapi import Request, Response
from fastapi.routing import APIRoute

NOT_FINITE = ("NaN, Infinity and numbers beyond +-1.8e308 are not JSON numbers; send finite numbers "
              "(or null, or the value as a string)")


class _NotFinite(ValueError):
    """Raised by the parser hooks below (and only by them)."""


def _refuse(_: str) -> NoReturn:
    raise _NotFinite(NOT_FINITE)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(NOT_FINITE)
    return value


def loads(body: bytes | str) -> Any:
    """``json.loads`` that refuses non-finite numbers (a :class:`json.JSONDecodeError` naming the rule)."""
    try:
        return json.loads(body, parse_constant=_refuse, parse_float=_finite)
    except _NotFinite:
        raise json.JSONDecodeError(NOT_FINITE, body if isinstance(body, str) else body.decode("utf-8", "replace"),
                                   0) from None


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """An ``APIRoute`` whose JSON body is parsed by :func:`loads`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
