"""``MemOSChatMessageHistory``: LangChain's ``BaseChatMessageHistory`` persisted in a cube.

The transcript of each session lives in the cube's ``memory.db`` (table ``langchain_messages``,
one row per message, in order), so it survives restarts and travels with ``cube.dump``. With
``remember=True`` each human and AI message is also read into memory (one ``message`` item each,
its message id in ``sources``) in the same transaction, so the conversation becomes searchable by
the retriever, the tools and the middleware. Sync/async: the ``a*`` methods run in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from ..cube import MemCube
from ..errors import AccessDeniedError, InvalidTypeError
from ..items import new_id, to_epoch, utcnow
from ._common import in_thread, message_to_memory

_DDL = """
CREATE TABLE IF NOT EXISTS langchain_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    user_id TEXT,
    message TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS langchain_messages_session ON langchain_messages (session_id, seq);
"""


class MemOSChatMessageHistory(BaseChatMessageHistory):
    """A chat history keyed by session, stored in a MemCube, optionally read into memory.

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langchain]'

    Instantiate:
        .. code-block:: python

            import tempfile
            from memos_integrations import MemCube
            from memos_integrations.langchain import MemOSChatMessageHistory

            cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
            history = MemOSChatMessageHistory(cube, session_id="s1", user_id="alice", remember=True)

    Use:
        .. code-block:: python

            history.add_user_message("My sister Jo lives in Lisbon.")
            history.add_ai_message("Noted!")
            history.messages                                   # [HumanMessage, AIMessage]
            cube.search("where does Jo live?", user_id="alice")[0].item.text   # remembered

        With ``RunnableWithMessageHistory``:

        .. code-block:: python

            from langchain.chat_models import init_chat_model
            from langchain_core.runnables.history import RunnableWithMessageHistory

            model = init_chat_model("openai:gpt-4.1-mini")
            chain = RunnableWithMessageHistory(
                model, lambda session_id: MemOSChatMessageHistory(cube, session_id, user_id="alice"))
            chain.invoke("hi", config={"configurable": {"session_id": "s1"}})

    Async:
        .. code-block:: python

            from langchain_core.messages import HumanMessage

            await history.aadd_messages([HumanMessage("And my brother lives in Porto.")])
            messages = await history.aget_messages()

    ``clear()`` empties the transcript only: what was read into memory stays (it is long-term
    memory; forget it with ``cube.delete``). A history bound to ``user_id`` refuses a session that
    another user's messages are stored under.
    """

    def __init__(
        self,
        cube: MemCube,
        session_id: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        remember: bool = False,
    ) -> None:
        if not isinstance(cube, MemCube):
            raise InvalidTypeError(f"cube must be a MemCube, got {type(cube).__name__}")
        if not isinstance(session_id, str) or not session_id.strip():
            raise InvalidTypeError(f"session_id must be a non-empty string, got {session_id!r}")
        self.cube, self.session_id, self.user_id, self.agent_id = cube, session_id, user_id, agent_id
        self.remember = remember
        cube.store.ensure_schema(_DDL)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        self._check_owner()
        rows = self.cube.store.read(
            "SELECT message FROM langchain_messages WHERE session_id=? ORDER BY seq", (self.session_id,)
        )
        return messages_from_dict([json.loads(r[0]) for r in rows])

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` (and, with ``remember``, read them into memory) in one transaction."""
        if isinstance(messages, BaseMessage) or not isinstance(messages, Sequence):
            raise InvalidTypeError("add_messages takes a list of messages")
        bad = [type(m).__name__ for m in messages if not isinstance(m, BaseMessage)]
        if bad:
            raise InvalidTypeError(f"expected LangChain messages, got {bad}; wrap text in HumanMessage / AIMessage")
        if not messages:
            return
        self._check_owner()
        # every stored message gets an id, so a memory's sources point back at its message
        stored = [m if m.id else m.model_copy(update={"id": new_id()}) for m in messages]
        rows = [(self.session_id, self.user_id, json.dumps(message_to_dict(m)), to_epoch(utcnow())) for m in stored]
        to_remember = [d for d in map(message_to_memory, stored) if d is not None] if self.remember else []
        with self.cube.store.transaction() as conn:
            conn.executemany(
                "INSERT INTO langchain_messages (session_id, user_id, message, created_at) VALUES (?, ?, ?, ?)", rows
            )
            if to_remember:  # a failure here (empty text, bad embedder) rolls the transcript back too
                self.cube.add(
                    messages=to_remember, user_id=self.user_id, agent_id=self.agent_id,
                    session_id=self.session_id, timestamp=utcnow(), principal=self.user_id,
                )

    def clear(self) -> None:
        self._check_owner()
        with self.cube.store.transaction() as conn:
            conn.execute("DELETE FROM langchain_messages WHERE session_id=?", (self.session_id,))

    async def aget_messages(self) -> list[BaseMessage]:
        return await in_thread(lambda: self.messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await in_thread(self.add_messages, messages)

    async def aclear(self) -> None:
        await in_thread(self.clear)

    def _check_owner(self) -> None:
        if self.user_id is None:
            return
        owners = {
            r[0] for r in self.cube.store.read(
                "SELECT DISTINCT user_id FROM langchain_messages WHERE session_id=?", (self.session_id,)
            )
        }
        others = sorted(str(o) for o in owners - {self.user_id})
        if others:
            raise AccessDeniedError(
                f"session {self.session_id!r} holds messages of user(s) {others}, not {self.user_id!r}; "
                "use a session id of this user's own"
            )

    def __repr__(self) -> str:
        return f"MemOSChatMessageHistory(session_id={self.session_id!r}, user_id={self.user_id!r})"

