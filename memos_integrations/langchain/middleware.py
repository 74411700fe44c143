"""``MemOSMemoryMiddleware``: long-term memory for LangChain v1 agents (``create_agent``).

Hooks, in the order an agent run meets them:

- ``before_model``: search the user's memories for the latest human message and keep the best ones
  that fit ``max_tokens`` in private agent state (searched once per human turn, not once per tool loop);
- ``wrap_model_call``: put that block into the system message of this model call only, so recalled
  memories never pile up in the conversation's messages or checkpoints;
- ``after_agent``: read the new turn (human and AI messages since the last read) into memory, with
  the message ids as sources, the agent as principal and the thread as session.

Whose memories: the order every component of this package follows
(:func:`memos_integrations.access.resolve_scope`): ``user_id`` given here binds the middleware to one
user; otherwise the run's context names it (``agent.invoke(..., context={"user_id": "alice"})``), else
``config["configurable"]``. A run without a user is an error, a run for another user than the binding is
refused (and audited), and recalled memories are tagged with their user and ignored in another user's
run, so one user's memories never reach another's prompt. A message too long to search with is searched
by its head and tail; a message the cube will not store is left out of memory (logged), not fatal.
Needs the ``langchain`` package (``[langchain]`` extra). Sync/async: the async hooks run the sync cube
work in a worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, cast

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ModelRequest,
    ModelResponse,
    PrivateStateAttr,
)
from langchain_core.messages import AnyMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from typing_extensions import NotRequired, TypedDict

from ..access import Scope, normalize_id
from ..aio import in_thread
from ..errors import InvalidInputError
from ..face_api import CubeAPI, as_cube
from ..items import utcnow
from ..organize.links import conflict_notes
from ..prompting import fit_memories
from ..textual.retrieve import SearchPlan, plan_named
from ..toolmem.memory import NOT_LESSONS
from ._common import acting, message_to_memory, remember_turn, search_query

DEFAULT_HEADER = "Relevant long-term memories about this user (best first; older facts may be outdated):"


class Recall(TypedDict):
    """What ``before_model`` found for one human turn of one user."""

    user_id: str
    message_id: str | None
    text: str
    memory_ids: list[str]


class MemOSMemoryState(AgentState[Any]):
    memos_recall: NotRequired[Annotated[Recall | None, PrivateStateAttr]]
    memos_read_upto: NotRequired[Annotated[str | None, PrivateStateAttr]]


def approx_tokens(text: str) -> int:
    """About four characters per token (LangChain's own approximation); pass a real counter for precision."""
    return max(1, math.ceil(len(text) / 4))


class MemOSMemoryMiddleware(AgentMiddleware[MemOSMemoryState, Any]):
    """Recall a user's memories before the model runs; remember the turn after the agent finishes.

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langchain]'

    Instantiate:
        .. code-block:: python

            import tempfile
            from langchain.agents import create_agent
            from memos_integrations import MemCube
            from memos_integrations.langchain import MemOSMemoryMiddleware

            cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
            memory = MemOSMemoryMiddleware(cube, k=8, max_tokens=400, agent_id="helper")
            agent = create_agent("openai:gpt-4.1-mini", tools=[], middleware=[memory])

    Run:
        .. code-block:: python

            agent.invoke({"messages": [{"role": "user", "content": "I moved to Porto."}]},
                         context={"user_id": "alice"})
            agent.invoke({"messages": [{"role": "user", "content": "Where do I live?"}]},
                         context={"user_id": "alice"})   # the model's system message now recalls Porto

    Async:
        .. code-block:: python

            await agent.ainvoke({"messages": [{"role": "user", "content": "Where do I live?"}]},
                                context={"user_id": "alice"})

    ``remember=False`` only recalls; tool-memory lessons are left out of recall unless
    ``include_tool_lessons=True`` (MemOSToolMemoryMiddleware shows them before the tool call).
    ``token_counter`` (text -> tokens) replaces the four-characters
    estimate, e.g. ``lambda t: len(tokenizer.encode(t))``.
    """

    state_schema = MemOSMemoryState

    def __init__(
        self,
        cube: CubeAPI,
        *,
        user_id: str | None = None,
        user_key: str = "user_id",
        agent_id: str | None = None,
        k: int = 8,
        max_tokens: int = 512,
        plan: SearchPlan | str = "balanced",
        remember: bool = True,
        header: str = DEFAULT_HEADER,
        token_counter: Callable[[str], int] = approx_tokens,
        reader_mode: str | None = None,
        include_tool_lessons: bool = False,
    ) -> None:
        super().__init__()
        self.include_tool_lessons = include_tool_lessons  # tool lessons: MemOSToolMemoryMiddleware shows them
        self.reader_mode = reader_mode  # "fast" | "fine" | "async" for a cube with an LLM reader; None: its default
        cube = as_cube(cube, "MemOSMemoryMiddleware")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise InvalidInputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        self.cube, self.user_key = cube, user_key
        self.user_id, self.agent_id = normalize_id(user_id), normalize_id(agent_id, "agent_id")
        self.k, self.max_tokens, self.plan = k, max_tokens, plan_named(plan)
        self.remember, self.header, self.token_counter = remember, header, token_counter
        self.tools = []

    # -- whose run is this ----------------------------------------------------------------------
    def scope_for(self, runtime: Runtime[Any] | None) -> Scope:
        """Who this run acts for: the binding, else the run's context, else ``configurable``; never a guess."""
        context = getattr(runtime, "context", None)
        if self.user_key != "user_id" and context is not None:  # the context names its user another way
            context = {"user_id": _field(context, self.user_key), "agent_id": _field(context, "agent_id"),
                       "session_id": _field(context, "session_id")}
        scope = acting(self.cube, "this memory middleware", {"user_id": self.user_id, "agent_id": self.agent_id},
                       context=context)
        if scope.user_id is None:
            raise InvalidInputError(
                f"no user for this run: pass context={{{self.user_key!r}: '<user id>'}} to invoke, "
                "or bind the middleware with MemOSMemoryMiddleware(cube, user_id=...)"
            )
        return scope

    def user_for(self, runtime: Runtime[Any] | None) -> str:
        """The run's user (see :meth:`scope_for`)."""
        return self.scope_for(runtime).user_id  # type: ignore[return-value]  # scope_for refuses None

    # -- recall ---------------------------------------------------------------------------------
    def before_model(self, state: MemOSMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        user = self.user_for(runtime)
        human = _last_human(state["messages"])
        previous = state.get("memos_recall")
        if human is None:
            return {"memos_recall": None} if previous else None
        if previous and previous["user_id"] == user and previous["message_id"] == human.id:
            return None  # same turn, same user: a tool loop, keep what was recalled
        return {"memos_recall": self.recall(user, human)}

    async def abefore_model(self, state: MemOSMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return await in_thread(self.before_model, state, runtime)

    def recall(self, user_id: str, human: HumanMessage) -> Recall:
        """Search ``user_id``'s memories for ``human`` and render those that fit the token budget."""
        query = search_query(human.text)
        skip = None if self.include_tool_lessons else NOT_LESSONS
        hits = self.cube.search(query, user_id=user_id, top_k=self.k, plan=self.plan, metadata=skip) if query else []
        items = [h.item for h in hits]
        chosen, lines = fit_memories(items, self.max_tokens, self.token_counter,
                                     spent=self.token_counter(self.header), conflicts=conflict_notes(self.cube, items))
        text = "\n".join([self.header, *lines]) if lines else ""
        return Recall(user_id=user_id, message_id=human.id, text=text, memory_ids=[i.id for i in chosen])

    def _with_memories(self, request: ModelRequest[Any]) -> ModelRequest[Any]:
        recall = cast("Recall | None", request.state.get("memos_recall"))
        if not recall or not recall["text"]:
            return request
        if recall["user_id"] != self.user_for(request.runtime):
            return request  # stale state from another user's run on this thread: never show it
        base = request.system_message.text if request.system_message is not None else ""
        content = f"{base}\n\n{recall['text']}" if base else recall["text"]
        return request.override(system_message=SystemMessage(content=content))

    def wrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]
    ) -> Any:
        return handler(self._with_memories(request))

    async def awrap_model_call(
        self, request: ModelRequest[Any], handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]]
    ) -> Any:
        return await handler(self._with_memories(request))

    # -- remember -------------------------------------------------------------------------------
    def after_agent(self, state: MemOSMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        if not self.remember:
            return None
        scope = self.scope_for(runtime)
        messages = state["messages"]
        new = _unread(messages, state.get("memos_read_upto"))
        turn = [d for d in map(message_to_memory, new) if d is not None]
        remember_turn(self.cube, turn, user_id=scope.user_id, agent_id=scope.agent_id, session_id=scope.session_id,
                      timestamp=utcnow(), principal=scope.principal, tags=["agent_turn"],
                      **({"mode": self.reader_mode} if self.reader_mode else {}))
        return {"memos_read_upto": messages[-1].id} if messages else None

    async def aafter_agent(self, state: MemOSMemoryState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        return await in_thread(self.after_agent, state, runtime)


def _last_human(messages: Sequence[AnyMessage]) -> HumanMessage | None:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message
    return None


def _unread(messages: Sequence[AnyMessage], read_upto: str | None) -> Sequence[AnyMessage]:
    """Messages after the last one already read; without a marker, the turn from the last human message."""
    if read_upto is not None:
        for n, message in enumerate(messages):
            if message.id == read_upto:
                return messages[n + 1 :]
    for n in range(len(messages) - 1, -1, -1):
        if isinstance(messages[n], HumanMessage):
            return messages[n:]
    return messages


def _field(context: Any, key: str) -> Any:
    return context.get(key) if isinstance(context, dict) else getattr(context, key, None)
