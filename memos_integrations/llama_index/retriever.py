"""``MemOSRetriever``: the cube's hybrid memory search as a LlamaIndex ``BaseRetriever``.

Where it sits: for query engines, agents and ``RetrieverQueryEngine`` over *everything* a cube
remembers (conversation memories, facts, and chunks written by :class:`MemOSVectorStore`), within a
scope. Each hit becomes a ``NodeWithScore``: chunks come back as the node LlamaIndex wrote, other
memories as a ``TextNode``; all carry the memory's id, kind, scope, times, version, provenance and
per-leg ranks in their metadata (hidden from the embedder, and apart from the time from the LLM).
A hit flagged as contradicting other memories of its user (an organised cube's ``conflict`` links) also
carries ``metadata["conflicts"]``: the short texts of those memories, read in one batch for the page
(:func:`memos_integrations.organize.links.conflict_notes`), shown to the LLM, never embedded; the node's
text stays the memory's own.

Who is acting: the ``user_id`` / ``agent_id`` binding, else the user a LangGraph run's context names;
a run naming another user than the binding is refused. An unbound retriever with no run context
searches every user's memories (the cube owner's view): bind ``user_id`` for an end user.
A query of only whitespace finds nothing (no error). Sync/async: ``aretrieve`` runs in a worker thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import MetadataFilters

from ..access import normalize_id, resolve_scope
from ..aio import in_thread
from ..errors import InvalidInputError
from ..face_api import CubeAPI, as_cube
from ..organize.links import conflict_notes
from ..textual.filters import MemoryFilter
from ..textual.retrieve import SearchPlan, uses_working_memory
from ._nodes import check_embed_model, item_to_node, query_vector, run_config, with_memory_metadata
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
        embed_model: Any = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        """Args: the scope (``user_id``, ``agent_id``, ``session_id``; one id or a list), ``kinds``, ``tags``,
        metadata ``filters``, ``similarity_top_k``, the search ``plan``, and ``embed_model`` (the model a
        query engine embeds queries with; checked against the cube's, an ``EmbedderMismatchError`` if not it).
        """
        if isinstance(similarity_top_k, bool) or not isinstance(similarity_top_k, int) or similarity_top_k < 1:
            raise InvalidInputError(f"similarity_top_k must be a positive integer, got {similarity_top_k!r}")
        self._cube: CubeAPI = as_cube(cube, "MemOSRetriever")
        check_embed_model(self._cube, embed_model, "MemOSRetriever")
        self._bound = {"user_id": _ids(user_id, "user_id"), "agent_id": _ids(agent_id, "agent_id")}
        # built (and validated) once: a bad scope or filter fails here, not at the first query
        self._filter = MemoryFilter(user_id=self._bound["user_id"], agent_id=self._bound["agent_id"],
                                    session_id=session_id, kinds=kinds, tags_all=tags, metadata=to_memory_metadata(filters))
        self._top_k = similarity_top_k
        self._plan = plan
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    @classmethod
    def from_defaults(cls, cube: Any, **kwargs: Any) -> MemOSRetriever:
        """See the constructor for the keyword arguments (scope, kinds, tags, filters, top k, plan)."""
        return cls(cube, **kwargs)

    def _scoped_filter(self) -> MemoryFilter:
        """The filter for whoever is acting: a single bound id is checked against a run's context."""
        bound = {k: v for k, v in self._bound.items() if isinstance(v, str)}
        scope = resolve_scope(bound=bound, config=run_config(), audit=self._cube.audit, what="MemOSRetriever",
                              fields=("user_id", "agent_id"))
        if self._bound["user_id"] is None and scope.user_id is not None:  # an unbound retriever in a user's run
            return dataclasses.replace(self._filter, user_id=scope.user_id)
        return self._filter

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        flt = self._scoped_filter()
        if not query_bundle.query_str.strip() and query_bundle.embedding is None:
            return []  # no words and no vector: nothing to look for
        qvec = None
        if query_bundle.embedding is not None:  # already embedded by the caller: skip the embedder
            qvec = query_vector(self._cube, query_bundle.embedding, "MemOSRetriever")
        session = {"current_session": self._session(flt)} if uses_working_memory(self._plan) else {}
        hits = self._cube.search(query_bundle.query_str, filter=flt, top_k=self._top_k, plan=self._plan,
                                 query_vector=qvec, **session)
        notes = conflict_notes(self._cube, [h.item for h in hits])  # one batch for the page, not one per hit
        return [NodeWithScore(node=with_conflicts(with_memory_metadata(item_to_node(h.item), h.item, h.ranks),
                                                  notes.get(h.item.id, ())), score=h.score)
                for h in hits]

    def _session(self, flt: MemoryFilter) -> str | None:
        """The session this retriever acts in (working memory first): the run's, else its one bound session."""
        scope = resolve_scope(config=run_config(), what="MemOSRetriever", fields=())
        bound = flt.session_id[0] if flt.session_id and len(flt.session_id) == 1 else None
        return scope.session_id or bound

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await in_thread(self._retrieve, query_bundle)


def with_conflicts(node: BaseNode, conflicts: Sequence[str]) -> BaseNode:
    """``node`` with ``metadata["conflicts"]`` (the short texts of the memories it is flagged as contradicting),
    shown to the LLM and never embedded; unchanged when there are none."""
    if conflicts:
        node.metadata["conflicts"] = list(conflicts)
        node.excluded_embed_metadata_keys = sorted({*node.excluded_embed_metadata_keys, "conflicts"})
        node.excluded_llm_metadata_keys = [k for k in node.excluded_llm_metadata_keys if k != "conflicts"]
    return node


def _ids(value: str | Sequence[str] | None, what: str) -> str | list[str] | None:
    """One id or a list of ids, each normalised (an int is its string; empty ids are refused)."""
    if value is None or isinstance(value, (str, int)):
        return normalize_id(value, what)
    return [i for i in (normalize_id(v, what) for v in value) if i is not None]
