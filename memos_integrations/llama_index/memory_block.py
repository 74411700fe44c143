"""``MemOSMemoryBlock``: long-term memory for LlamaIndex ``Memory``, kept in a cube.

Where it sits: LlamaIndex ``Memory`` keeps a token-limited FIFO of recent messages (here in
:class:`MemOSAsyncChatStore`) and flushes what overflows into its memory blocks. This block writes
flushed messages into the cube as ``message`` memories (one per turn, scoped to the user, agent and
session, linked turn to turn, with times), and on every ``Memory.get`` returns the memories most
relevant to the latest turns, found by the cube's hybrid search, as a bulleted text block.

Who is acting: the block's ``user_id`` / ``agent_id`` binding, else the user a LangGraph run's
context names. A block with neither refuses to read or write unless created with ``all_users=True``
(then it writes memories of no user and searches everyone's: the cube owner's view).

``Memory`` moves messages to its blocks only when the short-term queue overflows its token limit.
At the end of a session call :func:`flush_memory` (or ``await aflush_memory(memory)``) to move what is
still queued into the blocks, so a short conversation is remembered too.

Sync/async: the core is synchronous; the block's async methods run it in a worker thread.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.memory.memory import BaseMemoryBlock
from llama_index.core.storage.chat_store.base_db import MessageStatus

from ..access import Scope, resolve_scope
from ..aio import in_thread
from ..errors import InvalidInputError, InvalidTypeError
from ..face_api import CubeAPI, as_cube
from ..organize.links import conflict_notes
from ..prompting import conflict_note
from ..toolmem.memory import NOT_LESSONS
from ._nodes import run_config


class MemOSMemoryBlock(BaseMemoryBlock[str]):
    """A memory block whose memories live in a cube.

    Example:
        >>> import asyncio, tempfile
        >>> from memos_integrations import MemCube
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> block = MemOSMemoryBlock.from_defaults(cube, user_id="alice")
        >>> asyncio.run(block.aput([ChatMessage(role="user", content="My cat is called Miso.")]))
        >>> print(asyncio.run(block.aget([ChatMessage(role="user", content="What is my cat's name?")])))
        - user: My cat is called Miso.
        >>> cube.close()
    """

    name: str = Field(default="memos_memory", description="The block's name in the memory template.")
    description: str | None = Field(
        default="Relevant long-term memories from earlier conversations.", description="What the block holds."
    )
    user_id: str | None = Field(default=None, description="Whose memories are written and searched.")
    agent_id: str | None = Field(default=None, description="The agent the memories are scoped to, if any.")
    top_k: int = Field(default=5, ge=1, description="How many memories to return.")
    plan: str = Field(default="balanced", description="The cube search plan: 'fast', 'balanced' or 'deep'.")
    query_messages: int = Field(default=2, ge=1, description="How many of the latest messages make the search query.")
    all_sessions: bool = Field(
        default=True, description="Search memories of every session of the user, not only the current one."
    )
    all_users: bool = Field(
        default=False,
        description="Opt in to a block bound to no user: it writes memories of no user and searches every user's.",
    )

    include_tool_lessons: bool = Field(
        default=False, description="Recall tool-memory lessons too (by default the tool-memory middleware shows them).")
    reader_mode: str | None = Field(
        default=None, description="'fast', 'fine' or 'async' for a cube with an LLM reader; None: the reader's default.")

    _cube: CubeAPI = PrivateAttr()

    def __init__(self, cube: Any, **data: Any) -> None:
        super().__init__(**data)
        self._cube = as_cube(cube, "MemOSMemoryBlock")
        if self.user_id is None and not self.all_users:
            raise InvalidInputError(
                "MemOSMemoryBlock needs a user_id (whose memories it writes and searches); pass user_id=..., "
                "or all_users=True for a block that searches every user's memories"
            )

    @classmethod
    def from_defaults(cls, cube: Any, user_id: str | None = None, **kwargs: Any) -> MemOSMemoryBlock:
        """A block for ``user_id``; other keyword arguments are the fields (``agent_id``, ``top_k``, ``plan`` ...)."""
        return cls(cube, user_id=user_id, **kwargs)

    def _scope(self) -> Scope:
        """Who is acting: the binding, else a LangGraph run's context (another user than the binding is refused)."""
        return resolve_scope(bound={"user_id": self.user_id, "agent_id": self.agent_id}, config=run_config(),
                             audit=self._cube.audit, what="MemOSMemoryBlock", fields=("user_id", "agent_id"))

    @staticmethod
    def _text(message: ChatMessage) -> str:
        return (message.content or "").strip()

    async def _aput(self, messages: list[ChatMessage]) -> None:
        """Write ``messages`` (those with text; tool calls without text are skipped) as memories."""
        await in_thread(self._put, messages)

    def _put(self, messages: list[ChatMessage]) -> None:
        by_session: dict[str | None, list[dict[str, Any]]] = {}
        for m in messages:
            if not isinstance(m, ChatMessage):
                raise InvalidInputError(f"expected llama_index ChatMessage, got {type(m).__name__}")
            text = self._text(m)
            if not text:
                continue
            session = m.additional_kwargs.get("session_id")
            row: dict[str, Any] = {"role": m.role.value, "content": text}
            name = m.additional_kwargs.get("name")
            if isinstance(name, str) and name:
                row["name"] = name
            by_session.setdefault(session if isinstance(session, str) else None, []).append(row)
        scope = self._scope()
        for session, rows in by_session.items():
            self._cube.add(messages=rows, user_id=scope.user_id, agent_id=scope.agent_id, session_id=session,
                           **({"mode": self.reader_mode} if self.reader_mode else {}))

    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        """The memories most relevant to the latest messages, one ``- speaker: text`` line each."""
        recent = [t for t in (self._text(m) for m in (messages or [])) if t][-self.query_messages:]
        if not recent:
            return ""
        session = None if self.all_sessions else block_kwargs.get("session_id")
        return await in_thread(self._search, "\n".join(recent), session)

    def _search(self, query: str, session: str | None) -> str:
        scope = self._scope()
        hits = self._cube.search(query, user_id=scope.user_id, agent_id=scope.agent_id, session_id=session,
                                 top_k=self.top_k, plan=self.plan,
                                 metadata=None if self.include_tool_lessons else NOT_LESSONS)
        notes = conflict_notes(self._cube, [h.item for h in hits])  # one batch for the page
        lines = []
        for h in hits:
            speaker = h.item.metadata.get("speaker")
            when = f" ({h.item.event_time.date().isoformat()})" if h.item.event_time else ""
            lines.append(f"- {speaker + ': ' if speaker else ''}{h.item.text}{when}{conflict_note(notes.get(h.item.id, ()))}")
        return "\n".join(lines)

    async def atruncate(self, content: str, tokens_to_truncate: int) -> str | None:
        """Drop the least relevant (last) memories until about ``tokens_to_truncate`` tokens are gone."""
        lines = content.splitlines()
        budget = tokens_to_truncate * 4  # ~4 characters per token, the estimate LlamaIndex's own blocks use
        while lines and budget > 0:
            budget -= len(lines.pop()) + 1
        return "\n".join(lines) or None


async def aflush_memory(memory: Any) -> int:
    """Move every message still in ``memory``'s short-term queue into its memory blocks; end of a session.

    ``Memory`` hands messages to its blocks only when the queue overflows its token limit, so the
    last turns of a session (or all of a short one) would never reach long-term memory. This passes
    them to every block (as ``Memory`` does on overflow: ``from_short_term_memory=True`` with the
    session id) and then archives them in the chat store, so a second flush writes nothing twice.

    Args:
        memory: a LlamaIndex ``llama_index.core.memory.Memory``.

    Returns:
        How many messages were flushed.

    Raises:
        InvalidTypeError: ``memory`` is not a LlamaIndex ``Memory``.
    """
    from llama_index.core.memory import Memory

    if not isinstance(memory, Memory):
        raise InvalidTypeError(f"flush_memory takes a llama_index Memory, got {type(memory).__name__}")
    queued = await memory.sql_store.get_messages(memory.session_id, status=MessageStatus.ACTIVE)
    if not queued:
        return 0
    # blocks first, archive after: a failure leaves the messages queued (retried), never lost
    for block in memory.memory_blocks:
        await block.aput(list(queued), from_short_term_memory=True, session_id=memory.session_id)
    await memory.sql_store.archive_oldest_messages(memory.session_id, n=len(queued))
    return len(queued)


def flush_memory(memory: Any) -> int:
    """The synchronous :func:`aflush_memory` (not from inside a running event loop: await that one there).

    Example:
        >>> import tempfile
        >>> from llama_index.core.memory import Memory
        >>> from memos_integrations import MemCube
        >>> from memos_integrations.llama_index import MemOSAsyncChatStore
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> memory = Memory.from_defaults(session_id="s1", chat_store=MemOSAsyncChatStore.from_defaults(cube, user_id="ann"),
        ...                               memory_blocks=[MemOSMemoryBlock.from_defaults(cube, user_id="ann")])
        >>> memory.put(ChatMessage(role="user", content="My sister Maya lives in Oslo."))
        >>> flush_memory(memory), [m.text for m in cube.get_all(user_id="ann")]
        (1, ['My sister Maya lives in Oslo.'])
        >>> cube.close()
    """
    from llama_index.core.async_utils import asyncio_run

    flushed: int = asyncio_run(aflush_memory(memory))
    return flushed
