"""``MemOSChatMessageHistory``: LangChain's ``BaseChatMessageHistory`` persisted in a cube.

The transcript of each session lives in the cube's ``memory.db`` (table ``langchain_messages``,
one row per message, in order), so it survives restarts and travels with ``cube.dump``. With
``remember=True`` each human and AI message is also read into memory (one ``message`` item each,
its message id in ``sources``) after the transcript is written, so the conversation becomes
searchable by the retriever, the tools and the middleware; a message the cube will not index (too
long, no words) stays in the transcript and is left out of memory (logged and audited).

Who is acting: the binding (``user_id=``), else the user the enclosing run names
(:func:`memos_integrations.access.resolve_scope`). Sessions are per user, as LlamaIndex chat keys are:
a history acting for a user reads, appends to and clears that user's messages of the session only, so
two users naming the same session id each have their own transcript, and nothing a user does tells
her whether another user has a session of that name (nor can she take a name before him). An unscoped
history (no user anywhere) is the application's view: it reads every user's messages of the session
and may write only into a session no user has written to (refused there, audited, without naming the owner).

On a :class:`~memos_integrations.remote.RemoteCube` each call (read, append, clear) is one request to
the service (:mod:`memos_integrations.remote_store`), which runs this class on the real cube as the API
key's user: the same rules, the same errors; an unscoped history acts as the key's user there.
Sync/async: the ``a*`` methods run in a worker thread (:func:`memos_integrations.aio.in_thread`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from ..access import Scope, deny, normalize_id
from ..aio import in_thread
from ..errors import InvalidTypeError
from ..face_api import CubeAPI, as_cube
from ..items import new_id, to_epoch, utcnow
from ..remote_store import RemoteHistory, remote_of
from ..storage.tables.chat import LangChainMessages
from ._common import acting, message_to_memory, remember_turn


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
    memory; forget it with ``cube.delete``). Sessions are per user: another user's history of the same
    session id is another transcript; an unscoped history reads every user's messages of the session and
    may not write where a user has.
    """

    def __init__(
        self,
        cube: CubeAPI,
        session_id: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        remember: bool = False,
    ) -> None:
        cube = as_cube(cube, "MemOSChatMessageHistory")
        if not isinstance(session_id, str) or not session_id.strip():
            raise InvalidTypeError(f"session_id must be a non-empty string, got {session_id!r}")
        self.cube, self.session_id = cube, session_id
        self.user_id, self.agent_id = normalize_id(user_id), normalize_id(agent_id, "agent_id")
        self.remember = remember
        remote = remote_of(cube)
        # on a RemoteCube the service runs this class on the real cube; here each call is one request
        self._remote = None if remote is None else RemoteHistory(remote, session_id)
        self.table: LangChainMessages | None = None if remote is not None else LangChainMessages(cube.store.db)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        scope = self._scope()
        if self._remote is not None:
            return messages_from_dict(self._remote.call("messages", scope))
        table = self._local()
        # a user's session is her own messages of it; unscoped, every user's
        rows = table.messages(self.session_id) if scope.user_id is None else table.user_messages(self.session_id, scope.user_id)
        return messages_from_dict([json.loads(m) for m in rows])

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` to the transcript, then (with ``remember``) read them into memory.

        The transcript write is one transaction and always keeps the whole turn; indexing comes after it,
        and a message the cube refuses as input (too long, no words) is left out of memory only.
        """
        if isinstance(messages, BaseMessage) or not isinstance(messages, Sequence):
            raise InvalidTypeError("add_messages takes a list of messages")
        bad = [type(m).__name__ for m in messages if not isinstance(m, BaseMessage)]
        if bad:
            raise InvalidTypeError(f"expected LangChain messages, got {bad}; wrap text in HumanMessage / AIMessage")
        if not messages:
            return
        scope = self._scope()
        # every stored message gets an id, so a memory's sources point back at its message
        stored = [m if m.id else m.model_copy(update={"id": new_id()}) for m in messages]
        if self._remote is not None:
            self._remote.call("add", scope, messages=[message_to_dict(m) for m in stored], remember=self.remember)
            return
        table = self._local()
        rows = [(self.session_id, scope.user_id, json.dumps(message_to_dict(m)), to_epoch(utcnow())) for m in stored]
        with table.transaction() as tx:
            taken = False
            if scope.user_id is None:  # unscoped: only where no user has written, checked inside the write lock
                table.lock_session(tx, self.session_id)
                taken = bool(table.owners(self.session_id, tx))
            if not taken:
                table.append(tx, rows)
        owners = table.owners(self.session_id) if taken else set()
        if taken:  # refused after the transaction, so the audit row is not rolled back with it
            self._refuse(scope, "write", owners)
        if self.remember:
            turn = [d for d in map(message_to_memory, stored) if d is not None]
            remember_turn(self.cube, turn, user_id=scope.user_id, agent_id=scope.agent_id,
                          session_id=self.session_id, timestamp=utcnow(), principal=scope.principal)

    def clear(self) -> None:
        scope = self._scope()
        if self._remote is not None:
            self._remote.call("clear", scope)
            return
        if scope.user_id is not None:
            self._local().clear_user(self.session_id, scope.user_id)
            return
        self._check_owner(scope, "write")
        self._local().clear(self.session_id)

    async def aget_messages(self) -> list[BaseMessage]:
        return await in_thread(lambda: self.messages)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await in_thread(self.add_messages, messages)

    async def aclear(self) -> None:
        await in_thread(self.clear)

    def _scope(self) -> Scope:
        return acting(self.cube, "this chat history", {"user_id": self.user_id, "agent_id": self.agent_id})

    def _local(self) -> LangChainMessages:
        assert self.table is not None  # a local cube's history always has its table
        return self.table

    def _owners(self) -> set[str]:
        return self._local().owners(self.session_id)

    def _check_owner(self, scope: Scope, action: str) -> None:
        """An unscoped history may not write where a user has written."""
        owners = self._owners()
        if owners:
            self._refuse(scope, action, owners)

    def _refuse(self, scope: Scope, action: str, owners: set[str]) -> None:
        raise deny(self.cube.audit, f"history:{action}", scope.principal, f"session:{self.session_id}",
                   f"session {self.session_id!r} belongs to another user; use a session id of this user's own",
                   {"owners": sorted(owners)})

    def __repr__(self) -> str:
        return f"MemOSChatMessageHistory(session_id={self.session_id!r}, user_id={self.user_id!r})"

