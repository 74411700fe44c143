"""``MemOSMemoryBlock``: long-term memory for LlamaIndex ``Memory``, kept in a cube.

Where it sits: LlamaIndex ``Memory`` keeps a token-limited FIFO of recent messages (here in
:class:`MemOSAsyncChatStore`) and flushes what overflows into its memory blocks. This block writes
flushed messages into the cube as ``message`` memories (one per turn, scoped to the user, agent and
session, linked turn to turn, with times), and on every ``Memory.get`` returns the memories most
relevant to the latest turns, found by the cube's hybrid search, as a bulleted text block.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.memory.memory import BaseMemoryBlock

from ..errors import InvalidInputError
from ._nodes import in_thread


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

    _cube: Any = PrivateAttr()

    def __init__(self, cube: Any, **data: Any) -> None:
        super().__init__(**data)
        self._cube = cube

    @classmethod
    def from_defaults(cls, cube: Any, user_id: str | None = None, **kwargs: Any) -> MemOSMemoryBlock:
        return cls(cube, user_id=user_id, **kwargs)

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
        for session, rows in by_session.items():
            self._cube.add(messages=rows, user_id=self.user_id, agent_id=self.agent_id, session_id=session)

    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        """The memories most relevant to the latest messages, one ``- speaker: text`` line each."""
        recent = [t for t in (self._text(m) for m in (messages or [])) if t][-self.query_messages:]
        if not recent:
            return ""
        session = None if self.all_sessions else block_kwargs.get("session_id")
        return await in_thread(self._search, "\n".join(recent), session)

    def _search(self, query: str, session: str | None) -> str:
        hits = self._cube.search(query, user_id=self.user_id, agent_id=self.agent_id, session_id=session,
                                 top_k=self.top_k, plan=self.plan)
        lines = []
        for h in hits:
            speaker = h.item.metadata.get("speaker")
            when = f" ({h.item.event_time.date().isoformat()})" if h.item.event_time else ""
            lines.append(f"- {speaker + ': ' if speaker else ''}{h.item.text}{when}")
        return "\n".join(lines)

    async def atruncate(self, content: str, tokens_to_truncate: int) -> str | None:
        """Drop the least relevant (last) memories until about ``tokens_to_truncate`` tokens are gone."""
        lines = content.splitlines()
        budget = tokens_to_truncate * 4  # ~4 characters per token, the estimate LlamaIndex's own blocks use
        while lines and budget > 0:
            budget -= len(lines.pop()) + 1
        return "\n".join(lines) or None
