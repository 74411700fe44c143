"""Helpers shared by the LangChain face: item <-> Document, message <-> memory, the worker-thread rule.

Nothing here is public API; the classes in this subpackage are. Kept apart so that each face module
holds one class and the conversions exist once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.runnables.config import run_in_executor

from ..errors import AccessDeniedError, InvalidTypeError
from ..items import MemoryItem, SearchHit

T = TypeVar("T")

#: LangChain message type -> the role the cube's reader records
ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool", "chat": "user"}
#: Message types read into memory: what people and the assistant said, not prompts or tool output.
REMEMBERED_TYPES = frozenset({"human", "ai", "chat"})


async def in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking cube work in a worker thread (contextvars and callbacks follow, as LangChain does)."""
    return await run_in_executor(None, functools.partial(func, *args, **kwargs))


def hit_to_document(hit: SearchHit) -> Document:
    """A retriever's view of a hit: the memory text, its metadata, and where it came from."""
    item = hit.item
    meta: dict[str, Any] = dict(item.metadata)
    meta.update(
        memory_id=item.id,
        score=hit.score,
        ranks=dict(hit.ranks),
        kind=item.kind.value,
        event_time=item.event_time.isoformat() if item.event_time else None,
        created_at=item.created_at.isoformat(),
        sources=list(item.sources),
        user_id=item.user_id,
        agent_id=item.agent_id,
        session_id=item.session_id,
        version=item.version,
    )
    return Document(id=item.id, page_content=item.text, metadata=meta)


def item_to_document(item: MemoryItem) -> Document:
    """A vector store's view of an item: exactly the text, id and metadata that were added."""
    return Document(id=item.id, page_content=item.text, metadata=dict(item.metadata))


def message_to_memory(message: BaseMessage) -> dict[str, Any] | None:
    """A chat message as the cube's reader takes it, or None when it is not worth remembering."""
    if message.type not in REMEMBERED_TYPES:
        return None
    text = message.text if isinstance(message.text, str) else str(message.text)
    if not text.strip():  # e.g. an AI message that only calls tools
        return None
    out: dict[str, Any] = {"role": ROLES.get(message.type, "user"), "content": text}
    if message.name:
        out["name"] = message.name
    if message.id:
        out["id"] = message.id
    return out


def context_value(context: Any, key: str) -> Any:
    """``key`` from a run context that may be a mapping, a dataclass / pydantic object, or None."""
    if context is None:
        return None
    if isinstance(context, Mapping):
        return context.get(key)
    return getattr(context, key, None)


def check_user(bound: str, asked: Any, what: str) -> None:
    """Refuse a call for another user than the one a component is bound to."""
    if asked is None or asked == bound:
        return
    if not isinstance(asked, str):
        raise InvalidTypeError(f"user_id must be a string, got {type(asked).__name__}")
    raise AccessDeniedError(
        f"{what} is bound to user {bound!r} and cannot act for user {asked!r}; "
        f"create one bound to {asked!r} instead"
    )
