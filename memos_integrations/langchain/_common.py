"""Helpers shared by the LangChain face: item <-> Document, message <-> memory, who is acting, queries.

Nothing here is public API; the classes in this subpackage are. Kept apart so that each face module
holds one class and the conversions exist once. Who is acting is decided by
:func:`memos_integrations.access.resolve_scope` (binding > run context > ``configurable``); :func:`acting`
only finds the run's config for it, since LangChain methods such as ``VectorStore.similarity_search``
are not handed one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.runnables.config import RunnableConfig, ensure_config

from ..access import Scope, resolve_scope
from ..errors import InvalidInputError
from ..face_api import CubeAPI
from ..items import MemoryItem, SearchHit

log = logging.getLogger("memos_integrations.langchain")

#: LangChain message type -> the role the cube's reader records
ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool", "chat": "user"}
#: Message types read into memory: what people and the assistant said, not prompts or tool output.
REMEMBERED_TYPES = frozenset({"human", "ai", "chat"})
#: Scope fields a binding is enforced on; a thread / session may differ from a component's default one.
ENFORCED = ("user_id", "agent_id")


def acting(
    cube: CubeAPI,
    what: str,
    bound: Mapping[str, Any] | None = None,
    *,
    config: RunnableConfig | None = None,
    context: Any = None,
    asked: Any = None,
) -> Scope:
    """Who is acting for this call: ``resolve_scope`` over the binding, the run's context and ``configurable``.

    ``config`` defaults to the enclosing run's (LangChain keeps it in a context variable inside every
    runnable, agent and graph node), so a component called from ``create_agent`` sees that run's context.
    ``asked`` is a user named by this one call (``retriever.invoke(q, user_id=...)``): it may narrow an
    unbound component outside a run, never name another user than the binding or the run.
    A refused binding is written to the cube's audit log.
    """
    scope = resolve_scope(bound=bound, context=context, config=ensure_config(config), audit=cube.audit,
                          what=what, fields=ENFORCED)
    if asked is None:
        return scope
    user = resolve_scope(bound={"user_id": scope.user_id}, context={"user_id": asked}, config={},
                         audit=cube.audit, what=what, fields=("user_id",)).user_id
    return replace(scope, user_id=user)


def search_query(text: Any) -> str | None:
    """The query to search for ``text``: None when it has no words (no hits, not an error).

    A pasted text of any length is passed on whole: the cube reduces an over-long query to its tail and
    its most distinctive terms (``memos_integrations.textual.limits.reduce_query``).
    """
    if not isinstance(text, str) or not text.strip():
        return None
    return text.strip()


def remember_turn(cube: Any, turn: Sequence[Mapping[str, Any]], **scope: Any) -> list[str]:
    """Read ``turn`` into memory; a message the cube refuses (over-long, empty) is skipped, not fatal.

    The turn goes in as one batch; if the cube refuses the batch as input, each message is tried alone,
    so one pasted 40,000-character message never costs the rest of the turn. Returns what was skipped
    (each also logged and audited), so callers can say so.
    """
    if not turn:
        return []
    try:
        cube.add(messages=list(turn), **scope)
        return []
    except InvalidInputError:
        pass  # the cause is recorded per message below
    skipped: list[str] = []
    for message in turn:
        try:
            cube.add(messages=[message], **scope)
        except InvalidInputError as exc:
            skipped.append(str(exc))
            log.warning("a %s message was kept in the transcript but not read into memory: %s",
                        message.get("role"), exc)
            cube.audit("remember", scope.get("principal"), message.get("id"), {"skipped": str(exc)}, allowed=True)
    return skipped


def hit_to_document(hit: SearchHit, conflicts: Sequence[str] = ()) -> Document:
    """A retriever's view of a hit: the memory text, its metadata, and where it came from; ``conflicts``
    (the short texts of memories it is flagged as contradicting) go in ``metadata["conflicts"]``."""
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
    if conflicts:
        meta["conflicts"] = list(conflicts)
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
