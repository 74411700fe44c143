"""``MemOSToolMemoryMiddleware``: tool memory for LangChain v1 agents (``create_agent``).

Hooks:

- ``wrap_tool_call`` / ``awrap_tool_call``: every tool call the agent runs is timed and recorded in a
  :class:`~memos_integrations.toolmem.ToolMemory` (arguments capped and redacted, success, error class and
  message, latency, user / agent / thread), through the same recorder as LangGraph's
  :class:`~memos_integrations.langgraph.tool_memory.MemOSToolNode`. A failed call re-distils that tool's
  experiences (``ToolMemory(auto_distil=True)``).
- ``wrap_model_call`` / ``awrap_model_call``: before each model call, the experiences of the tools this
  model call offers ("avoid X: n of m such calls failed ... Instead use Y") and each tool's success rate
  go into the system message of this call only (never into the conversation or its checkpoints).

Whose tool memory: :func:`memos_integrations.access.resolve_scope` (the binding, then the run's context,
then ``configurable``); one user's calls and lessons never reach another's prompt. Needs the
``langchain`` package (``[langchain]`` extra). Sync/async: async hooks run the cube work in a worker thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware.types import AgentMiddleware, AgentState, ModelRequest, ModelResponse
from langchain_core.messages import SystemMessage
from langgraph.prebuilt.tool_node import ToolCallRequest

from ..face_api import CubeAPI
from ..langgraph.tool_memory import ToolCallRecorder, ToolResult, tool_names
from ..toolmem import ToolMemory


class MemOSToolMemoryMiddleware(AgentMiddleware[AgentState[Any], Any]):
    """Record the agent's tool calls; show the model what its earlier calls taught before it calls again.

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langchain]'

    Instantiate:
        .. code-block:: python

            import tempfile
            from langchain.agents import create_agent
            from langchain_core.tools import StructuredTool
            from memos_integrations import MemCube
            from memos_integrations.langchain import MemOSToolMemoryMiddleware

            def lookup_order(order_id: str) -> str:
                return f"order {order_id} shipped"

            tools = [StructuredTool.from_function(lookup_order, description="Find an order by its digits.")]
            cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
            tool_memory = MemOSToolMemoryMiddleware(cube, agent_id="support")   # or (ToolMemory(cube, ...))
            agent = create_agent("openai:gpt-4.1-mini", tools=tools, middleware=[tool_memory])

    Run:
        .. code-block:: python

            agent.invoke({"messages": [("user", "Where is order 123?")]}, context={"user_id": "maya"})
            tool_memory.memory.calls("maya")          # each tool call the agent made for maya

    Async:
        .. code-block:: python

            await agent.ainvoke({"messages": [("user", "Where is order 123?")]}, context={"user_id": "maya"})

    ``surface=False`` only records; ``record=False`` only surfaces.
    """

    def __init__(self, memory: ToolMemory | CubeAPI, *, user_id: str | None = None, agent_id: str | None = None,
                 record: bool = True, surface: bool = True) -> None:
        super().__init__()
        memory = memory if isinstance(memory, ToolMemory) else ToolMemory(memory)
        self.memory = memory
        self.recorder = ToolCallRecorder(memory, user_id=user_id, agent_id=agent_id, what="MemOSToolMemoryMiddleware")
        self.record, self.surface = record, surface
        self.tools = []

    # -- record ---------------------------------------------------------------------------------
    def wrap_tool_call(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        return self.recorder(request, handler) if self.record else handler(request)

    async def awrap_tool_call(self, request: ToolCallRequest,
                              handler: Callable[[ToolCallRequest], Awaitable[ToolResult]]) -> ToolResult:
        return await self.recorder.acall(request, handler) if self.record else await handler(request)

    # -- surface --------------------------------------------------------------------------------
    def _user(self, request: ModelRequest[Any]) -> str:
        return self.recorder.scope(getattr(request.runtime, "context", None)).require_user()

    def _with(self, request: ModelRequest[Any], block: str) -> ModelRequest[Any]:
        if not block:
            return request
        base = request.system_message.text if request.system_message is not None else ""
        return request.override(system_message=SystemMessage(content=f"{base}\n\n{block}" if base else block))

    def wrap_model_call(self, request: ModelRequest[Any],
                        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]]) -> Any:
        if not self.surface or not request.tools:
            return handler(request)
        return handler(self._with(request, self.memory.render(self._user(request), tool_names(request.tools))))

    async def awrap_model_call(self, request: ModelRequest[Any],
                               handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]]) -> Any:
        if not self.surface or not request.tools:
            return await handler(request)
        block = await self.memory.arender(self._user(request), tool_names(request.tools))
        return await handler(self._with(request, block))
