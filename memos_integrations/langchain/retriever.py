"""``MemOSRetriever``: LangChain's ``BaseRetriever`` running a cube's hybrid search for one user.

Where the vector store is plain similarity over documents, this is the memory read path: dense +
keyword legs fused, the time-aware boost, optional graph expansion and MMR (the ``plan``), always
inside one user's scope. Each ``Document`` carries the memory id, fused score, kind, event time and
sources in its metadata.

Who is acting (:func:`memos_integrations.access.resolve_scope`): the retriever's ``user_id``, else a
per-call ``user_id=`` (only on an unbound retriever), else the run's context, else ``configurable``;
a run for another user than the binding is refused and audited. ``user_id=None`` outside any run that
names a user searches the whole cube. A query without words returns no documents; a pasted text longer
than the cube takes is searched by its head and tail. Sync/async: the async path runs the sync search
in a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config
from pydantic import ConfigDict, Field, field_validator

from ..access import normalize_id
from ..aio import in_thread
from ..errors import InvalidInputError
from ..face_api import CubeAPI, as_cube
from ..items import Kind
from ..organize.links import conflict_notes
from ..textual.retrieve import SearchPlan, plan_named, uses_working_memory
from ._common import acting, hit_to_document, search_query

#: Per-call overrides ``invoke(query, **kwargs)`` accepts; ``user_id`` is deliberately not one of them.
_OVERRIDES = frozenset({"k", "agent_id", "session_id", "time_from", "time_to", "kinds", "memory_tags", "filter", "plan"})


class MemOSRetriever(BaseRetriever):
    """Hybrid memory search over a MemCube for one user, as a LangChain retriever.

    Setup:
        .. code-block:: bash

            pip install 'memos-integrations[langchain]'

    Instantiate:
        .. code-block:: python

            import tempfile
            from memos_integrations import MemCube
            from memos_integrations.langchain import MemOSRetriever

            cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
            cube.add(messages=[{"role": "user", "content": "I adopted a cat called Miso last week."}],
                     user_id="alice", session_id="s1", timestamp="2024-03-04T10:00")
            retriever = MemOSRetriever(cube=cube, user_id="alice", k=4)

    Search:
        .. code-block:: python

            docs = retriever.invoke("What is the cat's name?")
            docs[0].metadata["memory_id"], docs[0].metadata["event_time"], docs[0].metadata["sources"]
            retriever.invoke("what happened in March 2024?", k=2, session_id="s1")   # per-call overrides

    Async:
        .. code-block:: python

            docs = await retriever.ainvoke("What is the cat's name?")

    Metadata of each document: the memory's own metadata plus ``memory_id``, ``score`` (the fused
    rank score, higher is better; not a probability), ``ranks`` (rank in each retrieval leg),
    ``kind``, ``event_time`` and ``created_at`` (ISO 8601), ``sources``, ``user_id``, ``agent_id``,
    ``session_id`` and ``version``. ``user_id=None`` searches the whole cube (a shared knowledge cube);
    it must be said explicitly.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    cube: CubeAPI = Field(exclude=True, description="the cube to search")
    user_id: str | None = Field(description="whose memories; None searches every user's (say so explicitly)")
    agent_id: str | Sequence[str] | None = None
    session_id: str | Sequence[str] | None = None
    time_from: datetime | str | None = Field(None, description="inclusive lower bound on when it happened")
    time_to: datetime | str | None = Field(None, description="inclusive upper bound on when it happened")
    kinds: Sequence[Kind | str] | None = None
    # not `tags`: BaseRetriever.tags are the tracing tags of the run
    memory_tags: Sequence[str] | None = Field(None, description="memories must carry every one of these tags")
    filter: dict[str, Any] | None = Field(None, description="metadata conditions, as for MemOSVectorStore")
    k: int = Field(4, ge=1, le=1000, description="how many documents to return")
    plan: SearchPlan | str = Field("balanced", description="'fast' | 'balanced' | 'deep' | a SearchPlan")

    @field_validator("cube", mode="before")
    @classmethod
    def _a_cube(cls, value: Any) -> CubeAPI:
        return as_cube(value, "MemOSRetriever")

    @field_validator("user_id", mode="before")
    @classmethod
    def _an_id(cls, value: Any) -> str | None:
        return normalize_id(value)

    @field_validator("plan")
    @classmethod
    def _known_plan(cls, value: SearchPlan | str) -> SearchPlan | str:
        plan_named(value)
        return value

    def invoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        config = ensure_config(config)  # BaseRetriever does not hand the config on; the scope needs it
        return super().invoke(input, config, _memos_config=config, **kwargs)

    async def ainvoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> list[Document]:
        config = ensure_config(config)
        return await super().ainvoke(input, config, _memos_config=config, **kwargs)

    def _search_args(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        config = kwargs.pop("_memos_config", None)
        unknown = set(kwargs) - _OVERRIDES - {"user_id"}
        if unknown:
            raise InvalidInputError(f"unknown retriever arguments {sorted(unknown)}; per call you may set {sorted(_OVERRIDES)}")
        scope = acting(self.cube, "this retriever", {"user_id": self.user_id}, config=config, asked=kwargs.get("user_id"))
        args: dict[str, Any] = {
            "user_id": scope.user_id, "agent_id": self.agent_id, "session_id": self.session_id,
            "time_from": self.time_from, "time_to": self.time_to, "kinds": self.kinds, "tags": self.memory_tags,
            "metadata": self.filter, "top_k": self.k, "plan": self.plan,
        }
        for key, value in kwargs.items():
            if key in _OVERRIDES:
                args[{"k": "top_k", "filter": "metadata", "memory_tags": "tags"}.get(key, key)] = value
        if uses_working_memory(args["plan"]):  # the session this run acts in: its working memory first
            session = scope.session_id or args["session_id"]
            args["current_session"] = session if isinstance(session, str) else None
        return args

    def _search(self, query: str, kwargs: Mapping[str, Any]) -> list[Document]:
        args = self._search_args(kwargs)
        text = search_query(query)
        hits = [] if text is None else self.cube.search(text, **args)
        notes = conflict_notes(self.cube, [h.item for h in hits])  # one batch for the page, not one per hit
        return [hit_to_document(hit, notes.get(hit.item.id, ())) for hit in hits]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._search(query, kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return await in_thread(self._search, query, kwargs)
