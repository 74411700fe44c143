"""Memory tools for LangChain agents: ``search_memory``, ``save_memory``, ``forget_memory``.

Whose memories: the same order as every component of this package
(:func:`memos_integrations.access.resolve_scope`): the user the tools were bound to
(``create_memory_tools(cube, "maya")``), else the run's context (``agent.invoke(..., context={"user_id": ...})``),
else ``config["configurable"]``. The tool schema has no ``user_id`` argument, so a model can never choose
whose memories it reads. A run that names another user than the binding is refused and audited.

Errors: anything the cube refuses (access denied, an empty or over-long text, no user for the run) comes
back to the model as a tool error (``ToolMessage(status="error")``) and the agent run goes on; a memory id
of another user is "not found", never revealed. Sync/async: ``ainvoke`` runs the sync tool in a worker
thread (``BaseTool``'s default, which these tools keep).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..access import Scope, deny, normalize_id
from ..errors import AccessDeniedError, ItemNotFoundError, MemosError
from ..face_api import CubeAPI, as_cube
from ..items import Kind, utcnow
from ..organize.links import conflict_notes
from ..prompting import format_memory
from ..textual.memory import new_item
from ._common import acting, search_query


class SearchMemoryInput(BaseModel):
    query: str = Field(description="What to look for, in plain words, e.g. 'where does the user's sister live'")
    k: int = Field(5, ge=1, le=50, description="How many memories to return")


class SaveMemoryInput(BaseModel):
    text: str = Field(description="One self-contained fact about the user, e.g. 'Alice is allergic to peanuts'")
    kind: Kind = Field(Kind.FACT, description="fact, preference or event")


class ForgetMemoryInput(BaseModel):
    memory_id: str = Field(description="The id of a memory, as shown in brackets by search_memory")


def _tool_error(exc: ToolException) -> str:
    return f"Error: {exc}"


class _BoundMemoryTool(BaseTool):
    """A tool over one cube, bound to a user or taking the run's (the shared part of the three tools)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    cube: CubeAPI = Field(exclude=True)
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    handle_tool_error: Any = _tool_error  # a refused call is the model's to read, not the end of the run

    @field_validator("cube", mode="before")
    @classmethod
    def _a_cube(cls, value: Any) -> CubeAPI:
        return as_cube(value, cls.__name__)

    @field_validator("user_id", "agent_id", "session_id", mode="before")
    @classmethod
    def _an_id(cls, value: Any) -> str | None:
        return normalize_id(value)

    def _scope(self, config: RunnableConfig | None) -> Scope:
        """Who this call acts for; a refusal or a missing user becomes a tool error for the model."""
        try:
            scope = acting(self.cube, f"tool {self.name!r}", config=config,
                           bound={"user_id": self.user_id, "agent_id": self.agent_id, "session_id": self.session_id})
            scope.require_user(f"tool {self.name!r}")
        except AccessDeniedError as exc:  # the audit has who asked; the model learns only that it may not
            raise ToolException("this tool may not act for the user of this run; nothing was read or written") from exc
        except MemosError as exc:
            raise ToolException(str(exc)) from exc
        return scope


@contextmanager
def _as_tool_error() -> Iterator[None]:
    """What the cube refuses (empty or over-long text, a bad id) is the model's to read and fix."""
    try:
        yield
    except MemosError as exc:
        raise ToolException(str(exc)) from exc


class SearchMemoryTool(_BoundMemoryTool):
    """Search the acting user's long-term memory (hybrid search); content for the model, items as artifact.

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

    def _run(self, query: str, k: int = 5, *, config: RunnableConfig) -> tuple[str, list[dict[str, Any]]]:
        scope = self._scope(config)
        text = search_query(query)
        with _as_tool_error():
            hits = [] if text is None else self.cube.search(text, user_id=scope.user_id, top_k=k)
        if not hits:
            return "No memories found.", []
        notes = conflict_notes(self.cube, [h.item for h in hits])
        lines = [format_memory(h.item, cite=True, conflicts=notes.get(h.item.id, ())) for h in hits]
        artifact = [
            {"id": h.item.id, "text": h.item.text, "kind": h.item.kind.value, "score": h.score,
             "event_time": h.item.event_time.isoformat() if h.item.event_time else None,
             "sources": list(h.item.sources)}
            for h in hits
        ]
        return "\n".join(lines), artifact


class SaveMemoryTool(_BoundMemoryTool):
    """Save one fact, preference or event to the acting user's long-term memory.

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

    def _run(self, text: str, kind: Kind | str = Kind.FACT, *, config: RunnableConfig) -> str:
        scope = self._scope(config)
        with _as_tool_error():
            item = new_item(
                text, kind=kind, user_id=scope.user_id, agent_id=scope.agent_id, session_id=scope.session_id,
                created_by=scope.principal, method=f"tool:{self.name}", event_time=utcnow(),
            )
            self.cube.add_items([item])
        return f"Saved memory {item.id}."


class ForgetMemoryTool(_BoundMemoryTool):
    """Forget (tombstone) one of the acting user's memories by id; it stays in ``cube.history``.

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

    def _run(self, memory_id: str, *, config: RunnableConfig) -> str:
        scope = self._scope(config)
        try:
            item = self.cube.get(memory_id)
        except ItemNotFoundError:
            item = None
        if item is None or item.user_id != scope.user_id:  # another user's id reads as absent: nothing leaks
            if item is not None:  # ... to the model; the owner's audit log keeps the attempt, as for every denial
                deny(self.cube.audit, f"tool:{self.name}", scope.principal, memory_id, "", {"user_id": scope.user_id})
            return f"No memory {memory_id} for this user; nothing was forgotten."
        with _as_tool_error():
            self.cube.delete([memory_id], principal=scope.principal)
        return f"Forgot memory {memory_id}."


class FeedbackInput(BaseModel):
    correction: str = Field(description="the user's correction in their words, e.g. 'No, I moved to Porto in May'")


class FeedbackMemoryTool(_BoundMemoryTool):
    """Correct the acting user's memories in words (``cube.feedback``: the LLM reader reconciles it).

    Needs a cube with an LLM reader (``MemCube.open(path, reader=LLMReader.from_openai(...))``); the old
    versions stay in ``cube.history`` and ``cube.search(..., as_of=...)``.
    """

    name: str = "correct_memory"
    description: str = "Correct what long-term memory holds about the user when they say it is wrong or has changed."
    args_schema: type[BaseModel] = FeedbackInput

    def _run(self, correction: str, *, config: RunnableConfig) -> str:
        scope = self._scope(config)
        with _as_tool_error():
            result = self.cube.feedback(correction, user_id=scope.user_id, session_id=scope.session_id,
                                        principal=scope.principal)
        done = "; ".join(" ".join(str(x) for x in op) for op in result.operations)
        if not done and len(result):  # a remote cube reports what it wrote, not each operation
            done = "Stored: " + "; ".join(item.text for item in result)
        return done or "Nothing to change."


def create_memory_tools(
    cube: CubeAPI, user_id: str | None = None, *, agent_id: str | None = None, session_id: str | None = None
) -> list[BaseTool]:
    """``[search_memory, save_memory, forget_memory]`` over ``cube``, bound to ``user_id`` or taking the run's.

    Args:
        cube: the cube the tools read and write.
        user_id: bind the tools to this user; None takes each run's user from its context or configurable
            (a run that names none gets a tool error back, not another user's memories).
        agent_id: the agent the tools act as (written as provenance, ``created_by="agent:<id>"``).
        session_id: the session saved memories belong to; None takes the run's thread.

    Returns:
        The three tools, ready for ``create_agent(model, tools=...)``.

    Raises:
        InvalidTypeError: ``cube`` is not a cube, or an id is not a string.
        InvalidInputError: an id is empty.

    Example:
        .. code-block:: python

            import tempfile
            from langchain.agents import create_agent
            from memos_integrations import MemCube
            from memos_integrations.langchain import create_memory_tools

            cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
            agent = create_agent("openai:gpt-4.1-mini", tools=create_memory_tools(cube, agent_id="helper"))
            # agent.invoke({...}, context={"user_id": "alice"})
    """
    bound: dict[str, Any] = {"cube": as_cube(cube, "create_memory_tools"), "user_id": normalize_id(user_id),
                             "agent_id": agent_id, "session_id": session_id}
    tools: list[BaseTool] = [SearchMemoryTool(**bound), SaveMemoryTool(**bound), ForgetMemoryTool(**bound)]
    if getattr(cube, "reader", None) is not None:  # a cube with an LLM reader takes corrections in words
        tools.append(FeedbackMemoryTool(**bound))
    return tools
