"""Bounds on the ids a caller names in a path or a tool argument, checked before any store is read.

Why: body ids were bounded (512 characters) but a memory id in ``PATCH /v1/memories/{id}`` or an MCP
tool's ``memory_id`` reached the store at any length: a 1 MiB id in the path (or a tool call) was carried
through lookups, audit rows and error messages. Every path parameter of every ``/v1`` route and every
id an MCP tool takes goes through :func:`check_id`, so an over-long id is the same
:class:`~memos_integrations.errors.InvalidInputError` whichever door it came through.

Example:
    >>> check_id("m-1", "memory_id")
    'm-1'
    >>> check_id("x" * 600, "memory_id")
    Traceback (most recent call last):
    ...
    memos_integrations.errors.InvalidInputError: memory_id is 600 characters; ids may have at most 512 on this service: use a shorter id (a uuid, or a digest of the long one)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError

#: the longest memory, document, node or ref-doc id the service takes (LangChain's and LlamaIndex's are uuids)
MAX_ID_CHARS = 512
#: the longest cube or user id (as the ``cube_id`` and ``user_id`` query parameters)
MAX_NAME_CHARS = 256
_NAMES = frozenset({"cube_id", "user_id"})


def check_id(value: Any, what: str, limit: int = MAX_ID_CHARS) -> Any:
    """``value`` unchanged, unless it is a string over ``limit`` characters (other types are the callee's).

    Raises:
        InvalidInputError: the id is too long.
    """
    if isinstance(value, str) and len(value) > limit:
        raise InvalidInputError(f"{what} is {len(value)} characters; ids may have at most {limit} on this service: "
                                "use a shorter id (a uuid, or a digest of the long one)")
    return value


def check_path_ids(params: Mapping[str, Any]) -> None:
    """Every path parameter of a request (``request.path_params``): cube and user ids at most
    :data:`MAX_NAME_CHARS`, any other id at most :data:`MAX_ID_CHARS`."""
    for name, value in params.items():
        check_id(value, name, MAX_NAME_CHARS if name in _NAMES else MAX_ID_CHARS)
