"""The LangGraph face: a checkpointer, a long-term store, and memory nodes and tools for graphs.

Where it sits: thin subclasses of LangGraph's own extension points over one :class:`MemCube`.

- :class:`MemOSSaver` (``BaseCheckpointSaver``): thread state in the cube's SQLite.
- :class:`MemOSStore` (``BaseStore``): long-term memory; namespaces map to cube scopes, semantic
  search runs the cube's hybrid retrieval, TTL with a sweeper.
- :class:`NamespacePolicy` / ``MemOSStore.as_principal``: private and shared (team) namespaces,
  enforced and audited by the cube.
- :func:`make_recall_node`, :func:`make_remember_node`, :func:`make_memory_tools`: graph building blocks.
- :class:`MemOSToolNode`, :class:`ToolMemoryPrompt`: tool memory (record calls, show lessons to the model).

Importing this package needs the ``[langgraph]`` extra.
"""

from __future__ import annotations

from ..errors import require

require("langgraph.checkpoint.base", "langgraph")
require("langgraph.store.base", "langgraph")

from .access import NamespacePolicy, ScopedStore  # noqa: E402
from .errors import CheckpointSerdeError, ThreadNotFoundError  # noqa: E402
from .nodes import make_memory_tools, make_recall_node, make_remember_node  # noqa: E402
from .saver import AsyncMemOSSaver, MemOSSaver  # noqa: E402
from .store import MemOSStore  # noqa: E402
from .tool_memory import MemOSToolNode, ToolCallRecorder, ToolMemoryPrompt  # noqa: E402

__all__ = [
    "AsyncMemOSSaver",
    "CheckpointSerdeError",
    "MemOSSaver",
    "MemOSStore",
    "MemOSToolNode",
    "NamespacePolicy",
    "ScopedStore",
    "ThreadNotFoundError",
    "ToolCallRecorder",
    "ToolMemoryPrompt",
    "make_memory_tools",
    "make_recall_node",
    "make_remember_node",
]
