"""The one sync/async policy of the package, and its one helper.

The engine is synchronous. Every ``async`` method a face offers (``aget_relevant_documents``,
``aput``, ``abatch``, ``aquery`` ...) runs the same synchronous work in a worker thread with
:func:`in_thread`, so it never blocks the event loop and returns exactly what the sync method returns.
Context variables (LangChain callbacks, LangGraph's runtime) follow the call into the thread.

A sync method called *from* the event loop thread of an async-only component (LangGraph's async saver
does the same) is refused with :func:`refuse_on_loop`, since it would stall every other task.

Example:
    >>> import asyncio
    >>> asyncio.run(in_thread(sum, [1, 2, 3]))
    6
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import InvalidInputError

T = TypeVar("T")


async def in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking engine work in a worker thread, carrying the caller's context variables."""
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(ctx.run, func, *args, **kwargs))


def refuse_on_loop(loop: asyncio.AbstractEventLoop | None, what: str) -> None:
    """Refuse a blocking call made from ``loop``'s own thread (it would deadlock or stall the loop)."""
    if loop is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if running is loop:
        raise InvalidInputError(
            f"synchronous {what} called from the event loop this component runs on; "
            f"use the async method (a{what.split('.')[-1]} ...) or call it from another thread"
        )
