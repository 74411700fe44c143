"""The LangChain face of a MemCube: thin subclasses of langchain-core's own extension points.

- ``MemOSVectorStore``: a ``VectorStore`` over a cube (``vectorstore``)
- ``MemOSRetriever``: a ``BaseRetriever`` running the cube's hybrid search for one user (``retriever``)
- ``MemOSChatMessageHistory``: a ``BaseChatMessageHistory`` per session, in the cube (``chat_history``)
- ``create_memory_tools``: ``search_memory`` / ``save_memory`` / ``forget_memory`` tools bound to a user (``tools``)
- ``MemOSMemoryMiddleware``: ``AgentMiddleware`` for ``create_agent``: recall before the model, remember after (``middleware``)
- ``MemOSToolMemoryMiddleware``: records the agent's tool calls, shows their lessons before the next (``tool_memory``)
- ``MemOSEmbeddings``: any cube embedder as LangChain ``Embeddings`` (``embeddings``)
- ``MemOSChatModel``: a ``BaseChatModel`` for local HF models with KV-cache and adapter memory (``chat_model``)

Importing this subpackage needs ``langchain-core`` (the ``[langchain]`` extra); the middleware also
needs the ``langchain`` package and the chat model needs torch, so both load on first use and a
missing dependency there never breaks the rest. Sync/async policy: the cube is synchronous; every
``a*`` method here runs the sync work in a worker thread and never blocks the event loop.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import MissingExtraError

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # the face is optional: say which extra brings it
    raise MissingExtraError(
        "memos_integrations.langchain needs langchain-core; install it with: "
        "pip install 'memos-integrations[langchain]'"
    ) from exc

from .chat_history import MemOSChatMessageHistory
from .embeddings import MemOSEmbeddings
from .retriever import MemOSRetriever
from .tools import ForgetMemoryTool, SaveMemoryTool, SearchMemoryTool, create_memory_tools
from .vectorstore import MemOSVectorStore

# name -> (module, the extra that provides what that module imports)
_LAZY = {
    "MemOSMemoryMiddleware": (".middleware", "langchain"),
    "MemOSToolMemoryMiddleware": (".tool_memory", "langchain"),
    "MemOSChatModel": (".chat_model", "local"),
    "StandInChatModel": (".standin", "langchain"),
}

__all__ = [
    "ForgetMemoryTool",
    "MemOSChatMessageHistory",
    "MemOSChatModel",
    "MemOSEmbeddings",
    "MemOSMemoryMiddleware",
    "MemOSToolMemoryMiddleware",
    "MemOSRetriever",
    "MemOSVectorStore",
    "SaveMemoryTool",
    "SearchMemoryTool",
    "StandInChatModel",
    "create_memory_tools",
]

if TYPE_CHECKING:  # pragma: no cover
    from .chat_model import MemOSChatModel
    from .middleware import MemOSMemoryMiddleware
    from .standin import StandInChatModel
    from .tool_memory import MemOSToolMemoryMiddleware


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'memos_integrations.langchain' has no attribute {name!r}")
    module_name, extra = _LAZY[name]
    try:
        module = importlib.import_module(module_name, __name__)
    except ImportError as exc:
        if isinstance(exc, MissingExtraError):
            raise
        raise MissingExtraError(
            f"{name} needs {exc.name or 'a missing package'}; install it with: "
            f"pip install 'memos-integrations[{extra}]'"
        ) from exc
    value = getattr(module, name)
    globals()[name] = value
    return value
