"""Tool memory for agents: what each tool call did, and the lessons distilled from the calls.

- :mod:`.record`: a call's arguments made safe to keep (capped, JSON, secrets redacted) and the
  :class:`ToolCall` record;
- :mod:`.distil`: deterministic, extractive "avoid X, use Y instead" :class:`Experience` objects with
  success rates and the call ids they came from;
- :mod:`.memory`: :class:`ToolMemory`, which stores calls (``tool_calls`` table) and experiences (cube
  items tagged ``tool_experience``) per user and renders them for the model.

The faces' pieces: ``memos_integrations.langchain.MemOSToolMemoryMiddleware`` and
``memos_integrations.langgraph.tool_memory`` (a recording ``ToolNode`` and a prompt hook). Importing
this package imports no framework.
"""

from .distil import Experience, distil
from .memory import NOT_LESSONS, TAG, ToolMemory
from .record import ToolCall, safe_args

__all__ = ["NOT_LESSONS", "TAG", "Experience", "ToolCall", "ToolMemory", "distil", "safe_args"]
