"""Routes for the vector-store faces on a remote cube: the service runs the face itself, as the key's user.

Where it sits: a client's ``MemOSVectorStore(cube=RemoteCube(...))`` (LangChain or LlamaIndex) forwards
each operation here; the route opens the cube view for the key's user (MOS checks access and audits
refusals), builds the *same face class* bound to that user (and the key's agent), and runs the
operation. So every guarantee of the local face holds as is: one atomic write per request, caller ids,
scope ownership checks (another user's id is refused or skipped exactly like an id of another scope,
and audited in the cube), the embedding-space checks (dimension, NaN) and the filters. Nothing a client
sends can widen who acts: ``user_id`` and ``agent_id`` in a body go through :meth:`Service.actor` and
:meth:`Service.agent` (another user's id is refused and audited unless the key is an admin's).

Why the face and not raw store calls: the faces' checks read the store (``get_items``, vectors, rids);
shipping those primitives would hand out other scopes' rows and leave the checks to the client.

Bodies hold face arguments as plain JSON and are validated by the face (so errors are the face's own
``MemosError`` subclasses); LlamaIndex nodes travel as ``doc_to_json`` dicts of text, image or document
nodes only. Sync/async: every route is a plain ``def`` (FastAPI's worker threads), like the rest of the app.
"""

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConflictError, InvalidInputError, OversizedInputError
from ..storage import staged_writes
from ..storage.staged_writes import StagedWrites, StagingFullError, Taken
from . import idempotent
from .auth import Principal
from .errors import ERRORS, RateLimitedError
from .ids import MAX_ID_CHARS
from .json_body import StrictJSONRoute
from .limits import Limits
from .models import ErrorOut
from .service import Service, item_json

_Id = Annotated[str | None, Field(default=None, min_length=1, max_length=256)]
_ItemId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]


class _Binding(BaseModel):
    """Who and where: the cube (default: yours) and the face's binding; the service checks every id."""

    model_config = ConfigDict(extra="forbid")
    cube_id: _Id = None
    user_id: _Id = Field(default=None, description="must be the key's own user (admin keys may name another)")
    agent_id: _Id = Field(default=None, description="an agent key's own agent, or none")


class LangChainBinding(_Binding):
    session_id: _Id = None
    kind: str = "document"
    kinds: list[str] | Literal["all"] | None = Field(default=None, description="kinds read; 'all'; none: only `kind`")
    tags: list[str] = Field(default_factory=list)


_Stage = Annotated[str | None, Field(default=None, pattern=r"^[A-Za-z0-9_-]{8,64}$",
                                     description="names a write split over several requests (one random id per write); "
                                                 "every part but the last is kept, the last writes them all at once")]
_Part = Annotated[int | None, Field(default=None, ge=0, le=100_000, description="this request's part of the write, from 0")]
_Parts = Annotated[int | None, Field(default=None, ge=1, le=100_001,
                                     description="on the last part only: how many parts the write has")]


# element types are left to the face, so a wrong one is the face's own error (as on a local cube)
class LangChainAddIn(LangChainBinding):
    stage: _Stage = None
    part: _Part = None
    parts: _Parts = None
    texts: list[Any] = Field(description="the documents' texts")
    metadatas: list[Any] | None = None
    ids: list[Any] | None = None


class LangChainIdsIn(LangChainBinding):
    ids: list[Any] | None = Field(description="document ids")


class LangChainNearestIn(LangChainBinding):
    vector: list[float] | None = Field(default=None, description="a query vector of the cube's dimension (or give query)")
    query: str | None = Field(default=None, description="a query text the service embeds (or give vector)")
    k: int = Field(default=4, ge=1)
    filter: dict[str, Any] | None = None
    with_vectors: bool = Field(default=False, description="also answer each hit's stored vector (for MMR)")


class LlamaIndexBinding(_Binding):
    namespace: str = Field(default="default", min_length=1, max_length=256)
    embed_missing: bool = False


class LlamaIndexAddIn(LlamaIndexBinding):
    stage: _Stage = None
    part: _Part = None
    parts: _Parts = None
    nodes: list[dict[str, Any]] = Field(description="nodes as llama_index's doc_to_json writes them")


class LlamaIndexDeleteIn(LlamaIndexBinding):
    ref_doc_id: _ItemId


class LlamaIndexSelectIn(LlamaIndexBinding):
    node_ids: list[_ItemId] | None = None
    filters: dict[str, Any] | None = Field(default=None, description="MetadataFilters.model_dump()")


class VectorQuery(BaseModel):
    """LlamaIndex's ``VectorStoreQuery``, field for field (``filters`` as ``MetadataFilters.model_dump()``)."""

    model_config = ConfigDict(extra="forbid")
    query_embedding: list[float] | None = None
    similarity_top_k: int | None = 1
    doc_ids: list[_ItemId] | None = None
    node_ids: list[_ItemId] | None = None
    query_str: str | None = None
    output_fields: list[str] | None = None
    embedding_field: str | None = None
    mode: str = "default"
    alpha: float | None = None
    filters: dict[str, Any] | None = None
    mmr_threshold: float | None = None
    sparse_top_k: int | None = Field(default=None, ge=1)  # and at most the service's max_k
    hybrid_top_k: int | None = Field(default=None, ge=1)


class LlamaIndexQueryIn(LlamaIndexBinding):
    query: VectorQuery
    mmr_threshold: float | None = None


class EmbedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cube_id: _Id = None
    texts: list[str] = Field(min_length=1, max_length=256)
    query: bool = False


def vector_routes(service: Service, principal: Callable[..., Principal], limits: Limits) -> APIRouter:
    """The ``/v1/vector-stores`` routes, authenticating with the app's ``principal`` dependency."""
    mismatch = {"model": ErrorOut, "description": "a vector or embedding model that is not the cube's (EmbedderMismatchError)"}
    router = APIRouter(prefix="/v1/vector-stores", tags=["vector stores"], responses={**ERRORS, 400: mismatch},
                       route_class=StrictJSONRoute)
    Auth = Annotated[Principal, Depends(principal)]

    def ok(data: Any) -> JSONResponse:
        return JSONResponse(data)

    # in the home's mos.db: every worker process sees every part; the bounds are read when the app is made
    staged = StagedWrites(service.keys.db, ttl=staged_writes.TTL, max_bytes=staged_writes.MAX_BYTES,
                          max_user_bytes=staged_writes.MAX_USER_BYTES, max_total_bytes=staged_writes.MAX_TOTAL_BYTES,
                          idle=staged_writes.IDLE)

    @router.delete("/stages/{stage}", response_model=None)
    def abort_stage(stage: str, who: Auth) -> JSONResponse:
        """Give up a split write: its staged parts stop counting against your staging bounds now (they would
        be released 2 minutes after its last part anyway). A written write stays written and answerable."""
        return ok({"released": staged.abort(stage, who.key_id)})

    def staged_write(who: Principal, body: Any, columns: Sequence[str],
                     write: Callable[[dict[str, Any]], dict[str, Any]], mem: Any = None) -> JSONResponse:
        """Run ``write`` on the columns this request writes: the request's own, or (on a split write's last
        part) every staged part's followed by its own. An earlier part is kept and nothing is written
        (``{"staged": part}``); a last part sent again after its write was written (a client retrying
        after a lost answer) gets that write's answer back and writes nothing twice: from the staged record
        for 10 minutes, then from the record written with the write in ``mem``'s cube (:mod:`.idempotent`)."""
        own = {c: getattr(body, c) for c in columns}
        if body.stage is None:
            if body.part is not None or body.parts is not None:
                raise InvalidInputError("part and parts come with stage (the id of a split write); leave all three out "
                                        "for a write in one request")
            return ok(write(own))
        if body.part is None:
            raise InvalidInputError("a split write's request names its part (0, 1, ...) next to stage")
        # where the write goes (route, cube, namespace, kind, session, ...): every part must name the same, or
        # the last part would decide where the earlier ones are written
        binding = {"route": type(body).__name__,
                   **body.model_dump(mode="json", exclude={"stage", "part", "parts", *columns})}
        if body.parts is None:
            with _busy_is_429(lambda: staged.drop(body.stage, who.key_id)):
                staged.put(body.stage, who.key_id, body.part, json.dumps({"binding": binding, "rows": own}, allow_nan=False),
                           user_id=who.user_id)
            return ok({"staged": body.part})
        if body.part != body.parts - 1:
            staged.drop(body.stage, who.key_id)
            raise InvalidInputError(f"parts is sent on the last part only (part {body.parts - 1}), got part {body.part}; "
                                    "nothing was written: send the whole write again")
        # the last part itself, so that a stage id used again for another write is refused, not answered
        request = hashlib.sha256(json.dumps({"binding": binding, "rows": own}, sort_keys=True).encode()).hexdigest()
        durable = f"{request}:{who.agent_id or ''}"  # the cube's record is the user's: an agent key writes as its agent
        try:
            with _busy_is_429(lambda: staged.drop(body.stage, who.key_id)):
                taken = staged.take(body.stage, who.key_id, body.parts - 1, user_id=who.user_id, request=request)
        except ConflictError:  # being written, or its process died after (or before) the cube's commit
            kept = idempotent.find(mem, who.user_id, body.stage) if mem is not None else None
            if kept is not None and kept[0] == durable:
                staged.done(body.stage, who.key_id, json.dumps(kept[1]))
                return ok(kept[1])
            if body.parts != 1 or mem is None:
                raise  # its earlier parts were taken: only the cube's record could answer it
            taken = Taken([])  # a one-part write is all here: written once below, or answered from the record
        if taken.answer is not None:
            return ok(json.loads(taken.answer))
        try:
            rows = merged(body.stage, [json.loads(b) for b in taken.parts], binding, own, columns)
            answer = (write(rows) if mem is None else
                      idempotent.write_once(mem, who.user_id, body.stage, durable, lambda: write(rows),
                                            rows.get("texts") or ()))  # LangChain's texts: embedded before
        except BaseException:
            staged.drop(body.stage, who.key_id)  # nothing was written: a retry is refused or writes it whole
            raise
        staged.done(body.stage, who.key_id, json.dumps(answer))
        return ok(answer)

    def check_k(k: int) -> None:
        if k > limits.max_k:
            raise InvalidInputError(f"k may be at most {limits.max_k} on this service; ask for fewer")

    def view_of(who: Principal, body: _Binding, need: str) -> tuple[str, str | None, Any]:
        user = service.actor(who, body.user_id)
        return user, service.agent(who, body.agent_id), service.view(user, body.cube_id, need, create=need == "write")

    # -- the cube's embedding space --------------------------------------------------------------
    @router.get("/embedder", response_model=None)
    def embedder(who: Auth, cube_id: Annotated[str | None, Query(min_length=1, max_length=256)] = None) -> JSONResponse:
        """The cube's embedder (name, dimension, fingerprint) and this service's body limit, so a client can
        refuse a mismatched embedding model and size its batches. Your first call creates your default cube
        (when you name none and have none), as a first write does: a store is made before it writes."""
        view = service.view(service.actor(who, None), cube_id, "read", create=True)
        assert view is not None  # create=True
        emb = view.embedder
        return ok({"name": emb.name, "dimension": int(emb.dimension), "fingerprint": emb.fingerprint,
                   "max_text_chars": int(view.config.max_text_chars), "max_body_bytes": limits.max_body_bytes,
                   "max_k": limits.max_k})

    @router.post("/embed", response_model=None)
    def embed(body: EmbedIn, who: Auth) -> JSONResponse:
        """Embed texts with the cube's embedder (for clients without the model)."""
        view = service.view(service.actor(who, None), body.cube_id, "read", create=True)
        assert view is not None  # create=True
        emb = view.embedder
        many_queries = getattr(emb, "embed_queries", None) if body.query else None  # queries in their own precision
        if body.query and len(body.texts) == 1:
            rows = [emb.embed_query(body.texts[0])]
        else:
            rows = many_queries(body.texts) if many_queries is not None else emb.embed_documents(body.texts)
        return ok({"vectors": [[float(x) for x in row] for row in rows]})

    # -- LangChain --------------------------------------------------------------------------------
    def langchain_store(who: Principal, body: LangChainBinding, need: str) -> Any:
        from ..langchain.vectorstore import MemOSVectorStore

        user, agent, view = view_of(who, body, need)
        if view is None:
            return None
        return MemOSVectorStore(view, user_id=user, agent_id=agent, session_id=body.session_id, kind=body.kind,
                                kinds=body.kinds, tags=body.tags, principal=service.principal_name(who, user))

    @router.post("/langchain/add", response_model=None)
    def langchain_add(body: LangChainAddIn, who: Auth) -> JSONResponse:
        """``add_texts``: one atomic write; an id held by another scope or kind refuses the whole write.

        A write over the body limit comes as parts of one ``stage``: each part but the last is kept (nothing
        is written), and the last writes every part in one transaction, or nothing."""
        store = langchain_store(who, body, "write")
        return staged_write(who, body, ("texts", "metadatas", "ids"), lambda rows: {
            "ids": store.add_texts(rows["texts"], rows["metadatas"], ids=bounded_ids(rows["ids"]))},
            service.mos._cube(store.cube.cube_id).text_mem)

    @router.post("/langchain/check", response_model=None)
    def langchain_check(body: LangChainIdsIn, who: Auth) -> JSONResponse:
        """Refuse (audited) if any id is not writable by this store: a client checks before a batched write."""
        from ..langchain.vectorstore import _id_list

        store = langchain_store(who, body, "write")
        store._check_writable(_id_list(bounded_ids(body.ids)), store._scope())
        return ok({"status": "writable"})

    @router.post("/langchain/delete", response_model=None)
    def langchain_delete(body: LangChainIdsIn, who: Auth) -> JSONResponse:
        store = langchain_store(who, body, "write")
        return ok({"deleted": bool(store.delete(bounded_ids(body.ids)))})

    @router.post("/langchain/get", response_model=None)
    def langchain_get(body: LangChainIdsIn, who: Auth) -> JSONResponse:
        from ..langchain.vectorstore import _id_list

        ids = _id_list(bounded_ids(body.ids))
        store = langchain_store(who, body, "read")
        return ok({"items": [] if store is None else [item_json(it) for it in store._visible(ids)]})

    @router.post("/langchain/nearest", response_model=None)
    def langchain_nearest(body: LangChainNearestIn, who: Auth) -> JSONResponse:
        """The ``k`` nearest documents in scope, with cosine scores (and stored vectors when asked)."""
        check_k(body.k)
        if (body.vector is None) == (body.query is None):
            raise InvalidInputError("give exactly one of vector (a query embedding) or query (a text)")
        store = langchain_store(who, body, "read")
        vector = body.vector if body.query is None or store is None else store._embed_query(body.query)
        if store is None or vector is None:
            return ok({"hits": []})
        found = store._nearest(vector, body.k, body.filter)
        return ok({"hits": [{"item": item_json(it), "score": score,
                             **({"vector": [float(x) for x in vec]} if body.with_vectors else {})}
                            for it, score, vec in found]})

    # -- LlamaIndex -------------------------------------------------------------------------------
    def llama_store(who: Principal, body: LlamaIndexBinding, need: str) -> Any:
        from ..llama_index.vector_store import MemOSVectorStore

        user, agent, view = view_of(who, body, need)
        if view is None:
            return None
        return MemOSVectorStore(view, namespace=body.namespace, user_id=user, agent_id=agent,
                                embed_missing=body.embed_missing)

    @router.post("/llama-index/add", response_model=None)
    def llama_add(body: LlamaIndexAddIn, who: Auth) -> JSONResponse:
        """``add``: the nodes with their embeddings, checked whole, written in one transaction (a split write:
        its last part writes every staged part at once, see ``langchain/add``)."""
        from ..llama_index.wire import nodes_from_json

        store = llama_store(who, body, "write")
        return staged_write(who, body, ("nodes",), lambda rows: {"ids": store.add(bounded_nodes(nodes_from_json(rows["nodes"])))},
                            service.mos._cube(store._cube.cube_id).text_mem)

    @router.post("/llama-index/delete", response_model=None)
    def llama_delete(body: LlamaIndexDeleteIn, who: Auth) -> JSONResponse:
        store = llama_store(who, body, "write")
        store.delete(body.ref_doc_id)
        return ok({"status": "deleted"})

    @router.post("/llama-index/delete-nodes", response_model=None)
    def llama_delete_nodes(body: LlamaIndexSelectIn, who: Auth) -> JSONResponse:
        """``delete_nodes`` by ids and/or filters; neither clears the store (as ``clear``)."""
        from ..llama_index.wire import filters_from_json

        store = llama_store(who, body, "write")
        store.delete_nodes(body.node_ids, filters_from_json(body.filters))
        return ok({"status": "deleted"})

    @router.post("/llama-index/clear", response_model=None)
    def llama_clear(body: LlamaIndexBinding, who: Auth) -> JSONResponse:
        llama_store(who, body, "write").clear()
        return ok({"status": "cleared"})

    @router.post("/llama-index/get-nodes", response_model=None)
    def llama_get_nodes(body: LlamaIndexSelectIn, who: Auth) -> JSONResponse:
        from ..llama_index.wire import filters_from_json, nodes_to_json

        store = llama_store(who, body, "read")
        nodes = [] if store is None else store.get_nodes(body.node_ids, filters_from_json(body.filters))
        return ok({"nodes": nodes_to_json(nodes)})

    @router.post("/llama-index/item-ids", response_model=None)
    def llama_item_ids(body: LlamaIndexSelectIn, who: Auth) -> JSONResponse:
        """The cube item ids this store keeps the given node ids as (for ``history``)."""
        store = llama_store(who, body, "read")
        node_ids = list(body.node_ids or [])
        return ok({"item_ids": {} if store is None else store.scope_keys().resolve(store.client, node_ids)})

    @router.post("/llama-index/query", response_model=None)
    def llama_query(body: LlamaIndexQueryIn, who: Auth) -> JSONResponse:
        from llama_index.core.vector_stores.types import VectorStoreQuery, VectorStoreQueryMode

        from ..llama_index.wire import filters_from_json, nodes_to_json

        try:
            mode = VectorStoreQueryMode(body.query.mode)
        except ValueError:
            raise InvalidInputError(f"unknown query mode {body.query.mode!r}; use one of "
                                    f"{[m.value for m in VectorStoreQueryMode]}") from None
        query = VectorStoreQuery(**body.query.model_dump(exclude={"filters", "mode"}), mode=mode,
                                 filters=filters_from_json(body.query.filters))
        for k in (query.similarity_top_k, query.sparse_top_k, query.hybrid_top_k):
            if isinstance(k, int):
                check_k(k)
        store = llama_store(who, body, "read")
        if store is None:
            return ok({"nodes": [], "similarities": [], "ids": []})
        kw = {} if body.mmr_threshold is None else {"mmr_threshold": body.mmr_threshold}
        result = store.query(query, **kw)
        return ok({"nodes": nodes_to_json(result.nodes or []), "similarities": [float(s) for s in result.similarities or []],
                   "ids": list(result.ids or [])})

    return router



@contextmanager
def _busy_is_429(drop: Callable[[], None]) -> Iterator[None]:
    """A staging bound refused this part or write: the write is over (its client sends it again whole), so
    ``drop`` its parts now rather than hold them against the bounds until they expire (one refused write
    would lock the key out of split writes for the parts' lifetime). Every user's staging together is
    full: a 429 with ``Retry-After`` (the client waits), not a 413."""
    try:
        yield
    except OversizedInputError as exc:
        drop()
        if not isinstance(exc, StagingFullError):
            raise
        busy = RateLimitedError(str(exc))
        busy.retry_after = 60  # type: ignore[attr-defined]
        raise busy from None


def merged(stage: str, parts: list[dict[str, Any]], binding: dict[str, Any], own: dict[str, Any],
           columns: Sequence[str]) -> dict[str, Any]:
    """The columns of a split write: every staged part's rows (each part as ``{"binding", "rows"}``)
    followed by the last request's own.

    Raises:
        InvalidInputError: the parts were sent to different routes or bindings, or a column is given in
            some parts and not in others.
    """
    if any(p["binding"] != json.loads(json.dumps(binding)) for p in parts):
        raise InvalidInputError(f"the parts of write {stage!r} name different routes, cubes or bindings (cube_id, "
                                "namespace, kind, session_id, ...); nothing was written: send every part of a write "
                                "to the same route with the same binding")
    earlier = [p["rows"] for p in parts]
    out: dict[str, Any] = {}
    for c in columns:
        values = [p[c] for p in earlier] + [own[c]]
        if any(v is None for v in values) and not all(v is None for v in values):
            raise InvalidInputError(f"{c} is given in some parts of write {stage!r} and not in others; "
                                    "nothing was written: send it in every part or in none")
        out[c] = None if values[0] is None else [x for v in values for x in v]
    return out


def bounded_ids(ids: Any) -> Any:
    """``ids`` unchanged, unless one is a string over :data:`MAX_ID_CHARS` (other types are the face's to refuse)."""
    for n, i in enumerate(ids if isinstance(ids, list) else []):
        if isinstance(i, str) and len(i) > MAX_ID_CHARS:
            raise InvalidInputError(f"ids[{n}] is {len(i)} characters; ids may have at most {MAX_ID_CHARS} on this "
                                    "service: use a shorter id (a uuid, or a digest of the long one)")
    return ids


def bounded_nodes(nodes: list[Any]) -> list[Any]:
    """``nodes`` unchanged, unless a node id or ref-doc id is over :data:`MAX_ID_CHARS` characters."""
    for n, node in enumerate(nodes):
        for what, value in (("id", node.node_id), ("ref_doc_id", node.ref_doc_id)):
            if isinstance(value, str) and len(value) > MAX_ID_CHARS:
                raise InvalidInputError(f"nodes[{n}] has a {what} of {len(value)} characters; ids may have at most "
                                        f"{MAX_ID_CHARS} on this service: use a shorter id (a uuid, or a digest)")
    return nodes
