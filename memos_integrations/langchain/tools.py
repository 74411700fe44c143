"""Memory tools for LangChain agents: ``search_memory``, ``save_memory``, ``forget_memory``.

Each tool is bound to one cube and one user when it is made (``create_memory_tools(cube, user_id)``),
so a model can only ever reach that user's memories. A call that names another user (the optional
``user_id`` argument, or ``configurable.user_id`` in the run config) is refused with
``AccessDeniedError`` and the attempt is written to the cube's audit log; a memory id of another
user is "not found", never revealed. Sync/async: ``ainvoke`` runs the sync tool in a worker thread
(``BaseTool``'s default, which these tools keep).
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field

from ..cube import MemCube
from ..errors import AccessDeniedError, InvalidTypeError, ItemNotFoundError
from ..items import Kind, utcnow
from ..prompting import format_memory
from ..textual.memory import new_item
from ._common import check_user

_USER_FIELD = Field(
    None, description="Leave unset: the tool is bound to one user, and any other user id is refused."
)


class SearchMemoryInput(BaseModel):
    query: str = Field(description="What to look for, in plain words, e.g. 'where does the user's sister live'")
    k: int = Field(5, ge=1, le=50, description="How many memories to return")
    user_id: str | None = _USER_FIELD


class SaveMemoryInput(BaseModel):
    text: str = Field(description="One self-contained fact about the user, e.g. 'Alice is allergic to peanuts'")
    kind: Kind = Field(Kind.FACT, description="fact, preference or event")
    user_id: str | None = _USER_FIELD


class ForgetMemoryInput(BaseModel):
    memory_id: str = Field(description="The id of a memory, as shown in brackets by search_memory")
    user_id: str | None = _USER_FIELD


class _BoundMemoryTool(BaseTool):
    """A tool bound to one cube and one user (the shared part of the three tools)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    cube: MemCube = Field(exclude=True)
    user_id: str
    agent_id: str | None = None
    session_id: str | None = None

    def _authorise(self, asked: str | None, config: RunnableConfig | None) -> str:
        configured = ((config or {}).get("configurable") or {}).get("user_id")
        try:
            check_user(self.user_id, configured, f"tool {self.name!r}")
            check_user(self.user_id, asked, f"tool {self.name!r}")
        except AccessDeniedError:
            self.cube.audit(f"tool:{self.name}", self.user_id, asked or configured, {"refused": True}, allowed=False)
            raise
        return self.user_id

    @property
    def _principal(self) -> str:
        return f"agent:{self.agent_id}" if self.agent_id else self.user_id


class SearchMemoryTool(_BoundMemoryTool):
    """Search the bound user's long-term memory (hybrid search); content for the model, items as artifact.

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langchain]'

    Instantiate:
        .. code-block:: python

            import tempfile
            from memos_integrations import MemCube
            from memos_integrations.langchain import SearchMemoryTool

            cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
            tool = SearchMemoryTool(cube=cube, user_id="alice")

    Invoke:
        .. code-block:: python

            tool.invoke({"query": "tea", "k": 3})             # "[01J...] (fact) Alice drinks genmaicha."
            tool.invoke({"name": "search_memory", "args": {"query": "tea"}, "id": "1", "type": "tool_call"})

    Async:
        .. code-block:: python

            await tool.ainvoke({"query": "tea"})
    """

    name: str = "search_memory"
    description: str = (
        "Search the user's long-term memory for facts, preferences and past conversation. "
        "Returns one memory per line as '[id] (kind) text'."
    )
    args_schema: type[BaseModel] = SearchMemoryInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"

    def _run(
        self, query: str, k: int = 5, user_id: str | None = None, *, config: RunnableConfig
    ) -> tuple[str, list[dict[str, Any]]]:
        user = self._authorise(user_id, config)
        hits = self.cube.search(query, user_id=user, top_k=k)
        if not hits:
            return "No memories found.", []
        lines = [f"[{h.item.id}] ({h.item.kind.value}) {format_memory(h.item)[2:]}" for h in hits]
        artifact = [
            {"id": h.item.id, "text": h.item.text, "kind": h.item.kind.value, "score": h.score,
             "event_time": h.item.event_time.isoformat() if h.item.event_time else None,
             "sources": list(h.item.sources)}
            for h in hits
        ]
        return "\n".join(lines), artifact


class SaveMemoryTool(_BoundMemoryTool):
    """Save one fact, preference or event to the bound user's long-term memory.

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langchain]'

    Instantiate:
        .. code-block:: python

            import tempfile
            from memos_integrations import MemCube
            from memos_integrations.langchain import SaveMemoryTool

            cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
            tool = SaveMemoryTool(cube=cube, user_id="alice", agent_id="helper")

    Invoke:
        .. code-block:: python

            tool.invoke({"text": "Alice is allergic to peanuts", "kind": "fact"})   # "Saved memory 01J..."

    Async:
        .. code-block:: python

            await tool.ainvoke({"text": "Alice prefers window seats", "kind": "preference"})

    Provenance: ``created_by`` is ``agent:<agent_id>`` (or the user), ``method`` is ``tool:save_memory``.
    """

    name: str = "save_memory"
    description: str = (
        "Save one self-contained fact, preference or event about the user to long-term memory. "
        "Use it when the user shares something worth remembering later."
    )
    args_schema: type[BaseModel] = SaveMemoryInput

    def _run(
        self, text: str, kind: Kind | str = Kind.FACT, user_id: str | None = None, *, config: RunnableConfig
    ) -> str:
        user = self._authorise(user_id, config)
        item = new_item(
            text, kind=kind, user_id=user, agent_id=self.agent_id, session_id=self.session_id,
            created_by=self._principal, method=f"tool:{self.name}", event_time=utcnow(),
        )
        self.cube.add_items([item])
        return f"Saved memory {item.id}."


class ForgetMemoryTool(_BoundMemoryTool):
    """Forget (tombstone) one of the bound user's memories by id; it stays in ``cube.history``.

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langchain]'

    Instantiate:
        .. code-block:: python

            import tempfile
            from memos_integrations import MemCube
            from memos_integrations.langchain import ForgetMemoryTool

            cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
            tool = ForgetMemoryTool(cube=cube, user_id="alice")

    Invoke:
        .. code-block:: python

            tool.invoke({"memory_id": "01J..."})     # "Forgot memory 01J..." or "No memory ... for this user"

    Async:
        .. code-block:: python

            await tool.ainvoke({"memory_id": "01J..."})
    """

    name: str = "forget_memory"
    description: str = (
        "Forget one memory of the user by its id (from search_memory), e.g. when the user says it is wrong "
        "or asks you to forget it."
    )
    args_schema: type[BaseModel] = ForgetMemoryInput

    def _run(self, memory_id: str, user_id: str | None = None, *, config: RunnableConfig) -> str:
        user = self._authorise(user_id, config)
        try:
            item = self.cube.get(memory_id)
        except ItemNotFoundError:
            item = None
        if item is None or item.user_id != user:  # another user's id reads as absent: nothing leaks
            return f"No memory {memory_id} for this user; nothing was forgotten."
        self.cube.delete([memory_id], principal=self._principal)
        return f"Forgot memory {memory_id}."


def create_memory_tools(
    cube: MemCube, user_id: str, *, agent_id: str | None = None, session_id: str | None = None
) -> list[BaseTool]:
    """``[search_memory, save_memory, forget_memory]`` bound to ``cube`` and ``user_id``.

    Example:
        .. code-block:: python

            import tempfile
            from langchain.agents import create_agent
            from memos_integrations import MemCube
            from memos_integrations.langchain import create_memory_tools

            cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
            agent = create_agent("openai:gpt-4.1-mini", tools=create_memory_tools(cube, "alice", agent_id="helper"))
    """
    if not isinstance(user_id, str) or not user_id:
        raise InvalidTypeError("user_id must be a non-empty string: memory tools are always bound to one user")
    bound: dict[str, Any] = {"cube": cube, "user_id": user_id, "agent_id": agent_id, "session_id": session_id}
    return [SearchMemoryTool(**bound), SaveMemoryTool(**bound), ForgetMemoryTool(**bound)]
