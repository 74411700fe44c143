"""``MemOSRetriever``: the cube's hybrid memory search as a LlamaIndex ``BaseRetriever``.

Where it sits: for query engines, agents and ``RetrieverQueryEngine`` over *everything* a cube
remembers (conversation memories, facts, and chunks written by :class:`MemOSVectorStore`), within a
scope. Each hit becomes a ``NodeWithScore``: chunks come back as the node LlamaIndex wrote, other
memories as a ``TextNode``; all carry the memory's id, kind, scope, times, version, provenance and
per-leg ranks in their metadata (hidden from the embedder, and apart from the time from the LLM).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from ..errors import InvalidInputError
from ..textual.filters import MemoryFilter
from ..textual.retrieve import SearchPlan
from ._nodes import in_thread, item_to_node, with_memory_metadata
from .filters import to_memory_metadata


class MemOSRetriever(BaseRetriever):
    """Retrieve memories from a cube.

    Example:
        >>> import tempfile
        >>> from memos_integrations import MemCube
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> _ = cube.add(memory="Alice prefers window seats.", user_id="alice", kind="preference")
        >>> hit = MemOSRetriever.from_defaults(cube, user_id="alice").retrieve("where does alice like to sit?")[0]
        >>> hit.node.text, hit.node.metadata["kind"]
        ('Alice prefers window seats.', 'preference')
        >>> cube.close()
    """

    def __init__(
        self,
        cube: Any,
        *,
        user_id: str | Sequence[str] | None = None,
        agent_id: str | Sequence[str] | None = None,
        session_id: str | Sequence[str] | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        filters: MetadataFilters | None = None,
        similarity_top_k: int = 5,
        plan: SearchPlan | str = "balanced",
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if isinstance(similarity_top_k, bool) or not isinstance(similarity_top_k, int) or similarity_top_k < 1:
            raise InvalidInputError(f"similarity_top_k must be a positive integer, got {similarity_top_k!r}")
        self._cube = cube
        # built (and validated) once: a bad scope or filter fails here, not at the first query
        self._filter = MemoryFilter(user_id=user_id, agent_id=agent_id, session_id=session_id, kinds=kinds,
                                    tags_all=tags, metadata=to_memory_metadata(filters))
        self._top_k = similarity_top_k
        self._plan = plan
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def from_defaults(cls, cube: Any, **kwargs: Any) -> MemOSRetriever:
        """See the constructor for the keyword arguments (scope, kinds, tags, filters, top k, plan)."""
        return cls(cube, **kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        qvec = None
        if query_bundle.embedding is not None:  # already embedded by the caller: skip the embedder
            qvec = np.asarray(query_bundle.embedding, dtype=np.float32)
        hits = self._cube.search(query_bundle.query_str, filter=self._filter, top_k=self._top_k, plan=self._plan,
                                 query_vector=qvec)
        return [NodeWithScore(node=with_memory_metadata(item_to_node(h.item), h.item, h.ranks), score=h.score)
                for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await in_thread(self._retrieve, query_bundle)
