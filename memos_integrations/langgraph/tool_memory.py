"""Tool memory for LangGraph graphs: a ``ToolNode`` that records every call, and a prompt hook.

- :class:`ToolCallRecorder`: a ``wrap_tool_call`` / ``awrap_tool_call`` interceptor (LangGraph's own
  extension point of ``ToolNode``) that times each call and records it in a
  :class:`~memos_integrations.toolmem.ToolMemory`: arguments (capped, redacted), success, the error class
  and message of a failed call (an error ``ToolMessage`` or a raised exception, which is re-raised),
  latency, and the run's user / agent / thread. LangChain's middleware uses the same recorder.
- :class:`MemOSToolNode`: ``ToolNode(tools, wrap_tool_call=recorder, awrap_tool_call=recorder.acall)``.
- :class:`ToolMemoryPrompt`: ``(state, config) -> messages`` with the user's tool experiences and success
  rates in the system message: call it in the model node (or pass it as ``create_react_agent``'s
  ``prompt``), so the model reads the lessons before it calls those tools.

Whose calls: :func:`memos_integrations.access.resolve_scope` over the binding (``user_id=`` here), the
run's context (``graph.invoke(..., context={"user_id": ...})``), then ``config["configurable"]``; the
thread (``configurable["thread_id"]``) is the session. A run without a user is refused, one naming
another user than the binding is refused and audited. Sync/async: async paths run the cube work in a
worker thread (:mod:`memos_integrations.aio`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from ..access import Scope, normalize_id, resolve_scope
from ..aio import in_thread
from ..errors import InvalidInputError, InvalidTypeError
from ..toolmem import ToolMemory
from ..toolmem.record import error_class_of

ToolResult = ToolMessage | Command[Any]
_FRAMED = re.compile(r"^Error: ([A-Za-z_][\w.]*)\((['\"])(.*)\2\)\s*(\n|$)", re.DOTALL)


def _need_memory(memory: Any, what: str) -> ToolMemory:
    if not isinstance(memory, ToolMemory):
        raise InvalidTypeError(f"{what} needs a ToolMemory, got {type(memory).__name__}; pass ToolMemory(cube)")
    return memory


def _outcome(result: Any) -> dict[str, Any]:
    """ok / error / error_class / output of what a tool call returned."""
    if isinstance(result, ToolMessage):
        text = result.text if isinstance(result.text, str) else str(result.content)
        if result.status == "error":
            framed = _FRAMED.match(text.strip())  # ToolNode's "Error: ValueError('...')\n Please fix ..."
            error = framed.group(3) if framed else text
            return {"ok": False, "error": error, "error_class": framed.group(1) if framed else error_class_of(text),
                    "output": None}
        return {"ok": True, "output": text}
    return {"ok": True, "output": f"<{type(result).__name__}>"}


class ToolCallRecorder:
    """Record each tool call a ``ToolNode`` (or a LangChain agent) runs, for the run's user.

    Args:
        memory: where calls are recorded.
        user_id: bind to this user (else the run's context or ``configurable`` names the user).
        agent_id: bind to this agent (recorded with each call).
        what: how this component is named in errors and in the audit log.
    """

    def __init__(self, memory: ToolMemory, *, user_id: str | None = None, agent_id: str | None = None,
                 what: str = "tool memory") -> None:
        self.memory = _need_memory(memory, "ToolCallRecorder")
        self.user_id, self.agent_id = normalize_id(user_id), normalize_id(agent_id, "agent_id")
        self.what = what

    def scope(self, context: Any = None, config: Mapping[str, Any] | None = None) -> Scope:
        """Who this call acts for; a run without a user is refused (tool memory is per user)."""
        scope = resolve_scope(bound={"user_id": self.user_id, "agent_id": self.agent_id}, context=context,
                              config=config if config is not None else ensure_config(), audit=self.memory.cube.audit,
                              what=self.what, fields=("user_id", "agent_id"))
        scope.require_user(self.what)
        return scope

    def _request_scope(self, request: ToolCallRequest) -> Scope:
        runtime = request.runtime
        return self.scope(getattr(runtime, "context", None), getattr(runtime, "config", None))

    def _record_kwargs(self, request: ToolCallRequest, scope: Scope, started: float) -> dict[str, Any]:
        call = request.tool_call
        return {"user_id": scope.user_id, "tool": str(call.get("name") or "?"), "args": call.get("args"),
                "latency_ms": (time.perf_counter() - started) * 1000.0, "agent_id": scope.agent_id,
                "session_id": scope.session_id, "call_id": call.get("id")}

    def __call__(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        """``ToolNode(wrap_tool_call=...)``: run the call, record it, return (or re-raise) what it gave."""
        scope = self._request_scope(request)  # before the call: a refused run runs no tool
        started = time.perf_counter()
        try:
            result = handler(request)
        except GraphBubbleUp:  # an interrupt, not a failure of the tool
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised unchanged
            self.memory.record(**self._record_kwargs(request, scope, started), ok=False, error=str(exc) or repr(exc),
                               error_class=type(exc).__name__)
            raise
        self.memory.record(**self._record_kwargs(request, scope, started), **_outcome(result))
        return result

    async def acall(self, request: ToolCallRequest,
                    handler: Callable[[ToolCallRequest], Awaitable[ToolResult]]) -> ToolResult:
        """``ToolNode(awrap_tool_call=...)``: the async twin of :meth:`__call__` (recording in a worker thread)."""
        scope = self._request_scope(request)
        started = time.perf_counter()
        try:
            result = await handler(request)
        except GraphBubbleUp:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised unchanged
            await in_thread(self.memory.record, **self._record_kwargs(request, scope, started), ok=False,
                            error=str(exc) or repr(exc), error_class=type(exc).__name__)
            raise
        await in_thread(self.memory.record, **self._record_kwargs(request, scope, started), **_outcome(result))
        return result


class MemOSToolNode(ToolNode):
    """A ``ToolNode`` that records every call in tool memory (a worked graph: docs/tool-memory.md).

    In a graph: ``builder.add_node("tools", MemOSToolNode(tools, memory))``, and in the model node
    ``model.invoke(prompt(state, config))`` with ``prompt = ToolMemoryPrompt(memory, tools)``.

    Args:
        tools: the tools, as for ``ToolNode``.
        memory: where calls are recorded.
        user_id / agent_id: bind the node to a user / agent (else the run names them).
        **kwargs: passed to ``ToolNode`` (``handle_tool_errors``, ``name``, ...), except the wrappers.
    """

    def __init__(self, tools: Sequence[BaseTool | Callable[..., Any]], memory: ToolMemory, *,
                 user_id: str | None = None, agent_id: str | None = None, **kwargs: Any) -> None:
        if "wrap_tool_call" in kwargs or "awrap_tool_call" in kwargs:
            raise InvalidInputError("MemOSToolNode sets wrap_tool_call itself; wrap your interceptor around "
                                    "ToolCallRecorder(memory) and pass it to a plain ToolNode instead")
        recorder = ToolCallRecorder(memory, user_id=user_id, agent_id=agent_id, what="MemOSToolNode")
        super().__init__(tools, wrap_tool_call=recorder, awrap_tool_call=recorder.acall, **kwargs)
        self.recorder = recorder


def tool_names(tools: Sequence[Any]) -> list[str]:
    """Names of tools given as ``BaseTool`` objects, OpenAI-style dicts, plain names or functions."""
    names: list[str] = []
    for tool in tools:
        if isinstance(tool, str):
            names.append(tool)
        elif isinstance(tool, BaseTool):
            names.append(tool.name)
        elif isinstance(tool, Mapping):
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if isinstance(name, str):
                names.append(name)
        elif callable(tool) and isinstance(getattr(tool, "__name__", None), str):
            names.append(tool.__name__)
    return names


def with_block(messages: Sequence[BaseMessage], block: str) -> list[BaseMessage]:
    """``messages`` with ``block`` appended to the leading system message (one is added if none leads)."""
    out = list(messages)
    if not block:
        return out
    if out and isinstance(out[0], SystemMessage):
        base = out[0].text
        out[0] = SystemMessage(content=f"{base}\n\n{block}" if base else block)
    else:
        out.insert(0, SystemMessage(content=block))
    return out


class ToolMemoryPrompt:
    """``(state, config) -> messages``: the graph's messages with the user's tool experiences up front.

    Args:
        memory: where experiences are read.
        tools: the tools the model may call (their experiences and success rates are shown).
        user_id / agent_id: bind to a user / agent (else the run names them).
        messages_key: the state key holding the messages.
    """

    def __init__(self, memory: ToolMemory, tools: Sequence[Any], *, user_id: str | None = None,
                 agent_id: str | None = None, messages_key: str = "messages") -> None:
        self.recorder = ToolCallRecorder(memory, user_id=user_id, agent_id=agent_id, what="ToolMemoryPrompt")
        self.memory, self.tools, self.messages_key = self.recorder.memory, tool_names(tools), messages_key

    def _messages(self, state: Any) -> list[BaseMessage]:
        found = state.get(self.messages_key) if isinstance(state, Mapping) else getattr(state, self.messages_key, state)
        return list(found or [])

    def text(self, config: RunnableConfig | None = None) -> str:
        """The block for this run's user ("" when there is nothing to say)."""
        return self.memory.render(self.recorder.scope(None, config).require_user(), self.tools)

    def __call__(self, state: Any, config: RunnableConfig | None = None) -> list[BaseMessage]:
        return with_block(self._messages(state), self.text(config))

    async def ainvoke(self, state: Any, config: RunnableConfig | None = None) -> list[BaseMessage]:
        """The async twin of calling the prompt (the cube read runs in a worker thread)."""
        user = self.recorder.scope(None, config).require_user()
        return with_block(self._messages(state), await self.memory.arender(user, self.tools))
