"""Chat history in the cube: LlamaIndex's ``BaseChatStore`` and the async DB chat store ``Memory`` uses.

Where it sits: short-term conversation state (the FIFO queue LlamaIndex ``Memory`` manages), kept in
one table of the cube's SQLite, ``llama_index_chat``. Messages are stored as LlamaIndex's own JSON
(``ChatMessage.model_dump_json``), in insertion order, each ``active`` or ``archived``. Long-term
memory is separate: messages flushed out of the queue go to :class:`MemOSMemoryBlock`, which writes
them into the cube as memories. :class:`ChatTable` holds the logic once; the two stores are its faces.

Who is acting: a store's ``user_id`` binding, else the user a LangGraph run's context names. Chat keys
(LlamaIndex's session ids) are unique per user: rows are keyed by (user, key), so two users' sessions
named ``s1`` are two histories, and ``get_keys`` lists only the acting user's. A store with no user
reads and writes the rows of no user, which is where tables from before the ``user_id`` column are.
Sync/async: every async method runs the sync work in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.storage.chat_store.base import BaseChatStore
from llama_index.core.storage.chat_store.base_db import AsyncDBChatStore, MessageStatus

from ..aio import in_thread
from ..errors import InvalidInputError, InvalidTypeError
from ..face_api import CubeAPI, as_cube
from ._nodes import acting_user

_DDL = """
CREATE TABLE IF NOT EXISTS llama_index_chat (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, status TEXT NOT NULL,
    message TEXT NOT NULL, created_at REAL NOT NULL, user_id TEXT
);
CREATE INDEX IF NOT EXISTS llama_index_chat_key ON llama_index_chat (key, status, seq);
"""
#: tables from before rows were keyed by user gain the column (their rows belong to no user)
_MIGRATIONS = [
    ("user_id", "ALTER TABLE llama_index_chat ADD COLUMN user_id TEXT"),
]
_USER_INDEX = "CREATE INDEX IF NOT EXISTS llama_index_chat_user ON llama_index_chat (user_id, key, status, seq);"


def _status(status: MessageStatus | str | None) -> str | None:
    return None if status is None else MessageStatus(status).value


class ChatTable:
    """The synchronous operations both chat stores share, on the ``llama_index_chat`` table.

    ``user_of`` answers who is acting at each call; every statement is restricted to that user's rows.
    """

    def __init__(self, cube: CubeAPI, user_of: Callable[[], str | None]) -> None:
        self.store = cube.store
        self.user_of = user_of
        self.store.ensure_schema(_DDL)
        if self._missing():
            with self.store.transaction() as c:  # checked again inside the write lock: two openers migrate once
                for sql in self._missing():
                    c.execute(sql)
        self.store.ensure_schema(_USER_INDEX)

    def _missing(self) -> list[str]:
        columns = {r[1] for r in self.store.read("PRAGMA table_info(llama_index_chat)")}
        return [sql for column, sql in _MIGRATIONS if column not in columns]

    @staticmethod
    def _check(key: Any, messages: list[Any] | None = None) -> None:
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"a chat key is a non-empty string, got {key!r}")
        for m in messages or []:
            if not isinstance(m, ChatMessage):
                raise InvalidTypeError(f"expected llama_index ChatMessage, got {type(m).__name__}")

    def rows(self, key: str, status: str | None = None, limit: int | None = None, offset: int | None = None
             ) -> list[tuple[int, ChatMessage]]:
        self._check(key)
        sql = "SELECT seq, message FROM llama_index_chat WHERE key = ? AND user_id IS ?"
        params: list[Any] = [key, self.user_of()]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        sql += " ORDER BY seq LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset or 0]
        return [(seq, ChatMessage.model_validate_json(m)) for seq, m in self.store.read(sql, params)]

    def count(self, key: str, status: str | None = None) -> int:
        return len(self.rows(key, status)) if status is None else int(self.store.read(
            "SELECT COUNT(*) FROM llama_index_chat WHERE key = ? AND user_id IS ? AND status = ?",
            (key, self.user_of(), status))[0][0])

    def add(self, key: str, messages: list[ChatMessage], status: str = "active", replace: bool = False) -> None:
        self._check(key, messages)
        now, user = time.time(), self.user_of()
        rows = [(key, status, m.model_dump_json(), now, user) for m in messages]
        with self.store.transaction() as c:
            if replace:
                c.execute("DELETE FROM llama_index_chat WHERE key = ? AND user_id IS ? AND status = ?",
                          (key, user, status))
            c.executemany("INSERT INTO llama_index_chat (key, status, message, created_at, user_id) "
                          "VALUES (?, ?, ?, ?, ?)", rows)

    def delete_seqs(self, seqs: list[int]) -> None:
        with self.store.transaction() as c:
            c.executemany("DELETE FROM llama_index_chat WHERE seq = ?", [(s,) for s in seqs])

    def delete_all(self, key: str, status: str | None = None) -> list[ChatMessage]:
        found = self.rows(key, status)
        self.delete_seqs([s for s, _ in found])
        return [m for _, m in found]

    def oldest(self, key: str, n: int, archive: bool) -> list[ChatMessage]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInputError(f"n must be a non-negative integer, got {n!r}")
        with self.store.transaction() as c:  # read and change in one transaction: no message is lost between
            found = self.rows(key, "active", limit=n)
            seqs = [(s,) for s, _ in found]
            if archive:
                c.executemany("UPDATE llama_index_chat SET status = 'archived' WHERE seq = ?", seqs)
            else:
                c.executemany("DELETE FROM llama_index_chat WHERE seq = ?", seqs)
        return [m for _, m in found]

    def keys(self) -> list[str]:
        return [r[0] for r in self.store.read(
            "SELECT DISTINCT key FROM llama_index_chat WHERE user_id IS ? ORDER BY key", (self.user_of(),))]


class MemOSChatStore(BaseChatStore):
    """A LlamaIndex ``BaseChatStore`` in a cube (``ChatMemoryBuffer``, chat engines, agents).

    Example:
        >>> import tempfile
        >>> from llama_index.core.llms import ChatMessage
        >>> from memos_integrations import MemCube
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> store = MemOSChatStore.from_defaults(cube, user_id="alice")
        >>> store.add_message("s1", ChatMessage(role="user", content="hi"))
        >>> [m.content for m in MemOSChatStore.from_defaults(cube, user_id="alice").get_messages("s1")]
        ['hi']
        >>> MemOSChatStore.from_defaults(cube, user_id="bob").get_messages("s1")
        []
        >>> cube.close()
    """

    status: str = Field(default="active", description="The message status this store reads and writes.")
    user_id: str | None = Field(default=None, description="Whose chats these are; keys are unique per user.")
    _table: ChatTable = PrivateAttr()

    def __init__(self, cube: Any, **data: Any) -> None:
        super().__init__(**data)
        cube = as_cube(cube, "MemOSChatStore")
        self._table = ChatTable(cube, lambda: acting_user(self.user_id, cube, "MemOSChatStore"))

    @classmethod
    def from_defaults(cls, cube: Any, user_id: str | None = None) -> MemOSChatStore:
        """The chats of ``user_id`` (None: of no user) in ``cube``."""
        return cls(cube, user_id=user_id)

    @classmethod
    def class_name(cls) -> str:
        return "MemOSChatStore"

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        self._table.add(key, list(messages), self.status, replace=True)

    def get_messages(self, key: str) -> list[ChatMessage]:
        return [m for _, m in self._table.rows(key, self.status)]

    def add_message(self, key: str, message: ChatMessage) -> None:
        self._table.add(key, [message], self.status)

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        return self._table.delete_all(key, self.status) or None

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        rows = self._table.rows(key, self.status)
        if not isinstance(idx, int) or not 0 <= idx < len(rows):
            return None
        self._table.delete_seqs([rows[idx][0]])
        return rows[idx][1]

    def delete_last_message(self, key: str) -> ChatMessage | None:
        rows = self._table.rows(key, self.status)
        if not rows:
            return None
        self._table.delete_seqs([rows[-1][0]])
        return rows[-1][1]

    def get_keys(self) -> list[str]:
        return self._table.keys()


class MemOSAsyncChatStore(AsyncDBChatStore):
    """The async DB chat store LlamaIndex ``Memory`` queues messages in, kept in a cube.

    ``delete_message(key, idx)`` takes the message's row id, as ``SQLAlchemyChatStore`` does.

    Example:
        >>> import asyncio, tempfile
        >>> from llama_index.core.memory import Memory
        >>> from memos_integrations import MemCube
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> store = MemOSAsyncChatStore.from_defaults(cube, user_id="alice")
        >>> memory = Memory.from_defaults(session_id="s1", chat_store=store)
        >>> memory.put_messages([ChatMessage(role="user", content="hi")])
        >>> [m.content for m in memory.get_all()]
        ['hi']
        >>> cube.close()
    """

    user_id: str | None = Field(default=None, description="Whose chats these are; keys are unique per user.")
    _table: ChatTable = PrivateAttr()

    def __init__(self, cube: Any, **data: Any) -> None:
        super().__init__(**data)
        cube = as_cube(cube, "MemOSAsyncChatStore")
        self._table = ChatTable(cube, lambda: acting_user(self.user_id, cube, "MemOSAsyncChatStore"))

    @classmethod
    def from_defaults(cls, cube: Any, user_id: str | None = None) -> MemOSAsyncChatStore:
        """The chats of ``user_id`` (None: of no user) in ``cube``."""
        return cls(cube, user_id=user_id)

    @classmethod
    def class_name(cls) -> str:
        return "MemOSAsyncChatStore"

    async def get_messages(self, key: str, status: MessageStatus | None = MessageStatus.ACTIVE,
                           limit: int | None = None, offset: int | None = None) -> list[ChatMessage]:
        rows = await in_thread(self._table.rows, key, _status(status), limit, offset)
        return [m for _, m in rows]

    async def count_messages(self, key: str, status: MessageStatus | None = MessageStatus.ACTIVE) -> int:
        return await in_thread(self._table.count, key, _status(status))

    async def add_message(self, key: str, message: ChatMessage, status: MessageStatus = MessageStatus.ACTIVE) -> None:
        await in_thread(self._table.add, key, [message], _status(status) or "active")

    async def add_messages(self, key: str, messages: list[ChatMessage],
                           status: MessageStatus = MessageStatus.ACTIVE) -> None:
        await in_thread(self._table.add, key, list(messages), _status(status) or "active")

    async def set_messages(self, key: str, messages: list[ChatMessage],
                           status: MessageStatus = MessageStatus.ACTIVE) -> None:
        await in_thread(self._table.add, key, list(messages), _status(status) or "active", True)

    async def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        def run() -> ChatMessage | None:
            for seq, m in self._table.rows(key):
                if seq == idx:
                    self._table.delete_seqs([seq])
                    return m
            return None

        return await in_thread(run)

    async def delete_messages(self, key: str, status: MessageStatus | None = None) -> None:
        await in_thread(self._table.delete_all, key, _status(status))

    async def delete_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        return await in_thread(self._table.oldest, key, n, False)

    async def archive_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        return await in_thread(self._table.oldest, key, n, True)

    async def get_keys(self) -> list[str]:
        return await in_thread(self._table.keys)
