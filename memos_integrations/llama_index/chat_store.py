"""Chat history in the cube: LlamaIndex's ``BaseChatStore`` and the async DB chat store ``Memory`` uses.

Where it sits: short-term conversation state (the FIFO queue LlamaIndex ``Memory`` manages), kept in
one table of the cube's database, ``llama_index_chat`` (its statements are in
:mod:`memos_integrations.storage.tables.chat`). Messages are stored as LlamaIndex's own JSON
(``ChatMessage.model_dump_json``), in insertion order, each ``active`` or ``archived``. Long-term
memory is separate: messages flushed out of the queue go to :class:`MemOSMemoryBlock`, which writes
them into the cube as memories. :class:`ChatTable` holds the logic once; the two stores are its faces.

Who is acting: a store's ``user_id`` binding, else the user a LangGraph run's context names. Chat keys
(LlamaIndex's session ids) are unique per user: rows are keyed by (user, key), so two users' sessions
named ``s1`` are two histories, and ``get_keys`` lists only the acting user's. A store with no user
reads and writes the rows of no user, which is where tables from before the ``user_id`` column are.

On a :class:`~memos_integrations.remote.RemoteCube` the stores send :class:`ChatTable`'s operations to
the service (:mod:`memos_integrations.remote_store`), which runs them as the API key's user; a store
with no user acts as that user there (there are no rows of no user over HTTP).
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
from ..storage.tables.chat import LlamaIndexChat
from ._nodes import acting_user


def _status(status: MessageStatus | str | None) -> str | None:
    return None if status is None else MessageStatus(status).value


class ChatTable:
    """The synchronous operations both chat stores share, on the ``llama_index_chat`` table.

    ``user_of`` answers who is acting at each call; every statement is restricted to that user's rows.
    """

    def __init__(self, cube: CubeAPI, user_of: Callable[[], str | None]) -> None:
        self.table = LlamaIndexChat(cube.store.db)
        self.user_of = user_of

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
        return [(seq, ChatMessage.model_validate_json(m))
                for seq, m in self.table.rows(key, self.user_of(), status, limit, offset)]

    def count(self, key: str, status: str | None = None) -> int:
        return len(self.rows(key, status)) if status is None else self.table.count(key, self.user_of(), status)

    def add(self, key: str, messages: list[ChatMessage], status: str = "active", replace: bool = False) -> None:
        self._check(key, messages)
        self.table.add(key, self.user_of(), status, [m.model_dump_json() for m in messages], time.time(), replace=replace)

    def delete_seqs(self, seqs: list[int]) -> None:
        self.table.delete_seqs(seqs)

    def delete_at(self, key: str, status: str | None, index: int) -> ChatMessage | None:
        """Delete the ``index``-th message of ``key`` (negative counts from the end); None if there is none."""
        rows = self.rows(key, status)
        if not -len(rows) <= index < len(rows):
            return None
        seq, message = rows[index]
        self.delete_seqs([seq])
        return message

    def delete_seq(self, key: str, seq: int) -> ChatMessage | None:
        """Delete the message whose row id is ``seq``, if it is one of the acting user's under ``key``."""
        for found, message in self.rows(key):
            if found == seq:
                self.delete_seqs([found])
                return message
        return None

    def delete_all(self, key: str, status: str | None = None) -> list[ChatMessage]:
        found = self.rows(key, status)
        self.delete_seqs([s for s, _ in found])
        return [m for _, m in found]

    def oldest(self, key: str, n: int, archive: bool) -> list[ChatMessage]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInputError(f"n must be a non-negative integer, got {n!r}")
        self._check(key)
        with self.table.transaction() as tx:  # read and change in one transaction: no message is lost between
            tx.lock(f"llama_index_chat:{key}")
            found = self.table.rows(key, self.user_of(), "active", limit=n, tx=tx)
            seqs = [s for s, _ in found]
            if archive:
                self.table.archive_seqs(tx, seqs)
            else:
                self.table.delete_seqs(seqs, tx)
        return [ChatMessage.model_validate_json(m) for _, m in found]

    def keys(self) -> list[str]:
        return self.table.keys(self.user_of())


def chat_table(cube: CubeAPI, user_of: Callable[[], str | None]) -> Any:
    """The chat table for ``cube``: a :class:`ChatTable` on its database, or, for a
    :class:`~memos_integrations.remote.RemoteCube`, the same operations sent to the service."""
    from ..remote_store import RemoteChatTable, remote_of

    remote = remote_of(cube)
    return ChatTable(cube, user_of) if remote is None else RemoteChatTable(remote, user_of)


def messages_from_json(rows: list[Any]) -> list[ChatMessage]:
    """``ChatMessage``s from their JSON dumps (what travels over HTTP); anything else is refused clearly."""
    from pydantic import ValidationError

    try:
        return [ChatMessage.model_validate(row) for row in rows]
    except ValidationError as exc:
        raise InvalidInputError(f"messages must be ChatMessage JSON objects ({exc.error_count()} errors: "
                                f"{str(exc)[:300]})") from None


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
    _table: Any = PrivateAttr()

    def __init__(self, cube: Any, **data: Any) -> None:
        super().__init__(**data)
        cube = as_cube(cube, "MemOSChatStore")
        self._table = chat_table(cube, lambda: acting_user(self.user_id, cube, "MemOSChatStore"))

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
        if not isinstance(idx, int) or idx < 0:
            return None
        return self._table.delete_at(key, self.status, idx)

    def delete_last_message(self, key: str) -> ChatMessage | None:
        return self._table.delete_at(key, self.status, -1)

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
    _table: Any = PrivateAttr()

    def __init__(self, cube: Any, **data: Any) -> None:
        super().__init__(**data)
        cube = as_cube(cube, "MemOSAsyncChatStore")
        self._table = chat_table(cube, lambda: acting_user(self.user_id, cube, "MemOSAsyncChatStore"))

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
        return await in_thread(self._table.delete_seq, key, idx)

    async def delete_messages(self, key: str, status: MessageStatus | None = None) -> None:
        await in_thread(self._table.delete_all, key, _status(status))

    async def delete_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        return await in_thread(self._table.oldest, key, n, False)

    async def archive_oldest_messages(self, key: str, n: int) -> list[ChatMessage]:
        return await in_thread(self._table.oldest, key, n, True)

    async def get_keys(self) -> list[str]:
        return await in_thread(self._table.keys)
