"""The LlamaIndex face: a cube as LlamaIndex storage, memory, retriever and embedding model.

Where it sits: a thin layer of LlamaIndex's own extension points over :class:`~memos_integrations.MemCube`.
The cube's SQLite file is the one source of truth for all of them:

- :func:`storage_context_from_cube` -> a ``StorageContext`` whose docstore, index store
  (:class:`MemOSKVStore` rows), vector store (:class:`MemOSVectorStore`, items + vectors + FTS) and
  property graph store (:class:`MemOSPropertyGraphStore`, items + the ``edges`` table) all live in the cube;
- :class:`MemOSMemoryBlock` for LlamaIndex ``Memory``, with :class:`MemOSAsyncChatStore` (the async DB
  chat store ``Memory`` uses) and :class:`MemOSChatStore` (``BaseChatStore``) keeping chat history in the cube;
- :class:`MemOSRetriever` over the cube's hybrid search, and :class:`MemOSEmbedding` for the cube's embedder.

Who is acting: every class takes a ``user_id`` binding; where none is bound, the user a LangGraph run's
context names (:func:`memos_integrations.access.resolve_scope`). Keys (node ids, entity names,
documents, KV and chat keys) are unique per (user, namespace); see ``docs/scopes.md``.
:func:`flush_memory` moves a ``Memory``'s queued messages into its blocks at the end of a session.

Sync/async policy: the core is synchronous; every ``a*`` method here runs the sync work in a worker
thread (:func:`memos_integrations.aio.in_thread`) and never blocks the event loop.

Needs the ``[llama-index]`` extra: ``pip install 'memos-integrations[llama-index]'``.
"""

from __future__ import annotations

from ..errors import require

require("llama_index.core", "llama-index")

from .chat_store import MemOSAsyncChatStore, MemOSChatStore  # noqa: E402
from .embedding import MemOSEmbedding  # noqa: E402
from .filters import to_memory_metadata  # noqa: E402
from .graph_store import MemOSPropertyGraphStore, StructuredQueryUnsupportedError  # noqa: E402
from .kvstore import MemOSDocumentStore, MemOSIndexStore, MemOSKVStore  # noqa: E402
from .memory_block import MemOSMemoryBlock, aflush_memory, flush_memory  # noqa: E402
from .retriever import MemOSRetriever  # noqa: E402
from .storage import storage_context_from_cube  # noqa: E402
from .vector_store import MemOSVectorStore  # noqa: E402

__all__ = [
    "MemOSAsyncChatStore",
    "MemOSChatStore",
    "MemOSDocumentStore",
    "MemOSEmbedding",
    "MemOSIndexStore",
    "MemOSKVStore",
    "MemOSMemoryBlock",
    "MemOSPropertyGraphStore",
    "MemOSRetriever",
    "MemOSVectorStore",
    "StructuredQueryUnsupportedError",
    "aflush_memory",
    "flush_memory",
    "storage_context_from_cube",
    "to_memory_metadata",
]
