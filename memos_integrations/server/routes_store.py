"""The namespaced faces over HTTP: LangGraph's store, LangChain's chat history, LlamaIndex's chat and KV stores.

Where it sits: a face given a :class:`~memos_integrations.remote.RemoteCube` (see
:mod:`memos_integrations.remote_store`) sends each of its operations here, and the route runs the very
same face code on the real cube, through the MOS view of the key's user. The boundary is the face
operation, never a table: a client cannot name a SQL row, a KV collection prefix or a principal.

Who acts: the key's user (an admin's key may name another, as on every route) and the key's agent;
a ``user_id`` / ``agent_id`` / ``principal`` in the body is only a claim, checked by
:meth:`Service.actor` / :meth:`Service.agent` (refused and audited when it names someone else). The
store is stricter about agents: an agent's namespaces (``("agents", <id>, ...)``) open to that agent's
own key only, so a user-wide key that names an agent (``as_principal``) is refused there. The
face then applies its own rules as it does locally: LangGraph's :class:`NamespacePolicy` (another
user's ``("users", <id>, ...)`` namespace is a 403, audited in the cube), a LangChain session that
holds another user's messages is a 403 that does not name the owner, and LlamaIndex chat keys and
KV collections are per user, so another user's are simply not there. A cube the key cannot reach is
the service's usual 404, whatever the face.

Next to them, the cube calls a RemoteCube makes for the faces that need a user's view of the cube:
``/search`` and ``/memories`` (``cube.search`` / ``cube.get_all`` with a ``user_id``) and ``/conflicts``
(``organize.links.conflict_notes``: the flagged conflicts of a page of hits, read again in the cube).

Values are JSON by construction (the bodies are JSON); the faces re-check their own rules (a store
value is an object, a KV value an object, a namespace label holds no ``.``).

Sync/async: every route is a plain ``def`` that FastAPI runs in its worker-thread pool.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from ..access import deny
from ..errors import AccessDeniedError, CubeNotFoundError, InvalidInputError
from ..mos_view import CubeView
from .auth import Principal
from .errors import ERRORS, UnsupportedError
from .json_body import StrictJSONRoute
from .late_embed import search_plan
from .models import Id, KindName, SearchIn, Status
from .search_notes import page_notes, search_answer
from .service import Service, item_json

#: the most labels a namespace may have, and characters per label, over HTTP
MAX_LABELS = 64
MAX_LABEL_CHARS = 512
Label = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]
Namespace = Annotated[list[Label], Field(max_length=MAX_LABELS)]
Key = Annotated[str, Field(min_length=1, max_length=4096)]  # a store key is hashed into its item id (lg-<digest>)
#: the longest LlamaIndex chat key or KV key (a doc or node id) over HTTP, as node ids on the vector routes
MAX_ID_CHARS = 512
Fields = Annotated[list[Annotated[str, Field(min_length=1, max_length=512)]], Field(max_length=64)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Who(_In):
    cube_id: str | None = Id
    user_id: str | None = Field(default=None, min_length=1, max_length=256,
                                description="the acting user: the key's own (an admin's key may name another)")
    agent_id: str | None = Field(default=None, min_length=1, max_length=256,
                                 description="the acting agent: an agent key's own; a user key may name one")


# -- LangGraph store ----------------------------------------------------------------------------------
class GetOpIn(_In):
    op: Literal["get"]
    namespace: Namespace
    key: Key
    refresh_ttl: bool = True


class PutOpIn(_In):
    op: Literal["put"]
    namespace: Namespace
    key: Key
    value: dict[str, Any] | None = Field(description="a JSON object; null deletes the key")
    index: Literal[False] | Fields | None = Field(
        default=None, description="false: not indexed; a list: these fields; null: the store's")
    ttl: float | None = Field(default=None, gt=0, description="minutes")
    sources: list[Annotated[str, Field(max_length=1024)]] = Field(default_factory=list, max_length=256,
                                                                  description="provenance of the index items")


class SearchOpIn(_In):
    op: Literal["search"]
    namespace_prefix: Namespace
    query: str | None = Field(default=None, max_length=100_000)
    filter: dict[str, Any] | None = None
    limit: int = Field(default=10, ge=0, le=1000)
    offset: int = Field(default=0, ge=0, le=100_000)
    refresh_ttl: bool = True


class MatchIn(_In):
    match_type: Literal["prefix", "suffix"]
    path: Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]], Field(max_length=MAX_LABELS)]


class ListOpIn(_In):
    op: Literal["list_namespaces"]
    match_conditions: list[MatchIn] = Field(default_factory=list, max_length=8)
    max_depth: int | None = Field(default=None, ge=1, le=MAX_LABELS)
    limit: int = Field(default=100, ge=0, le=10_000)
    offset: int = Field(default=0, ge=0, le=100_000)


StoreOp = Annotated[GetOpIn | PutOpIn | SearchOpIn | ListOpIn, Field(discriminator="op")]


class IndexIn(_In):
    fields: Fields | None = None
    dims: int | None = Field(default=None, ge=1, le=65_536, description="checked against the cube's embedder")


class StoreBatchIn(_Who):
    """One ``MemOSStore.batch``: reads see the state before the batch's writes; all checked before any runs."""

    ops: list[StoreOp] = Field(min_length=1, max_length=1000)
    index: IndexIn | None = Field(default=None, description="the store's index config; null: no semantic index")
    principal: str | None = Field(default=None, min_length=1, max_length=256,
                                  description="an as_principal name: an agent name, checked as agent_id is")
    plan: Literal["fast", "balanced", "deep"] = "balanced"
    kind: KindName = "fact"


class StoreSweepIn(_Who):
    pass


class GrantIn(_In):
    """Open (``access``) or close (``null``) a namespace prefix to a principal, in the cube's NamespacePolicy."""

    cube_id: str | None = Id
    prefix: Annotated[Namespace, Field(min_length=1)]
    principal: str = Field(min_length=1, max_length=256, description="an agent id, or 'user:<id>'")
    access: Literal["read", "write"] | None = Field(description="null revokes")


class StoreResults(BaseModel):
    results: list[Any]


class Swept(BaseModel):
    swept: int


# -- LangChain chat history ---------------------------------------------------------------------------
class HistoryIn(_Who):
    """``messages`` (read), ``add`` (append, then remember if asked) or ``clear`` one session."""

    op: Literal["messages", "add", "clear"]
    session_id: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(default_factory=list, max_length=1000,
                                           description="LangChain message_to_dict() rows, for 'add'")
    remember: bool = False


class MessagesOut(BaseModel):
    messages: list[dict[str, Any]]


# -- LlamaIndex chat store ----------------------------------------------------------------------------
class LlamaChatIn(_Who):
    """One operation of the chat table both LlamaIndex chat stores share, on the acting user's rows."""

    op: Literal["rows", "count", "add", "delete_at", "delete_seq", "delete_all", "oldest", "keys"]
    key: str | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    status: Literal["active", "archived"] | None = None
    limit: int | None = Field(default=None, ge=0, le=100_000)
    offset: int | None = Field(default=None, ge=0, le=2**63 - 1)  # SQLite's range: beyond it was a 500
    messages: list[dict[str, Any]] = Field(default_factory=list, max_length=1000,
                                           description="ChatMessage.model_dump(mode='json') rows, for 'add'")
    replace: bool = False
    index: int | None = Field(default=None, description="position among the key's messages ('delete_at'; -1: the last)")
    seq: int | None = Field(default=None, description="a row id from 'rows' ('delete_seq')")
    n: int | None = Field(default=None, ge=0, le=100_000, description="how many of the oldest ('oldest')")
    archive: bool = False


class LlamaChatOut(BaseModel):
    rows: list[Any] | None = None
    messages: list[dict[str, Any]] | None = None
    message: dict[str, Any] | None = None
    count: int | None = None
    keys: list[str] | None = None


# -- LlamaIndex KV store ------------------------------------------------------------------------------
class LlamaKVIn(_Who):
    """One ``MemOSKVStore`` operation on the acting user's collections."""

    op: Literal["put_all", "get", "get_all", "delete"]
    collection: str = Field(default="data", min_length=1, max_length=1024)
    key: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    pairs: list[tuple[Annotated[str, Field(max_length=MAX_ID_CHARS)], dict[str, Any]]] = Field(default_factory=list,
                                                                                      max_length=10_000)


class LlamaKVOut(BaseModel):
    value: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    deleted: bool | None = None


# -- a face's cube.get_all ---------------------------------------------------------------------------
class ListIn(_Who):
    """One page of ``cube.get_all(user_id=...)``: the filter runs in the query, so pages count matches only."""

    session_id: str | None = Field(default=None, min_length=1, max_length=256)
    kinds: list[KindName] | None = None
    include_archived: bool = False
    limit: int = Field(default=50, ge=1, description="at most the service's page size (max_page)")
    offset: int = Field(default=0, ge=0, le=2**63 - 1)


class ListOut(BaseModel):
    items: list[dict[str, Any]]
    more: bool = Field(description="another page follows (ask again with offset + len(items))")


# -- a face's conflict_notes(cube, items) ---------------------------------------------------------------
class ConflictsIn(_Who):
    """The flagged conflicts of memories of this cube, by id (a page of hits): what a face marks a line with."""

    ids: list[Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]] = Field(
        max_length=10_000, description="memory ids (at most the service's max_k); an id this cube does not hold "
                                       "has no notes")
    chars: int = Field(default=80, ge=8, le=1000, description="each note is the other memory's text cut to this")


class ConflictsOut(BaseModel):
    conflicts: dict[str, list[str]] = Field(description="memory id -> the short texts of the memories it is "
                                                        "flagged as contradicting; ids without any are left out")


_READS = {"messages", "rows", "count", "keys", "get", "get_all"}


def router(service: Service, principal: Callable[..., Principal],
           charge: Callable[[Principal, float], None] | None = None) -> APIRouter:
    """The face routes for ``service``; ``principal`` is the app's key-checking dependency; ``charge(who,
    n)`` spends ``n`` more of the key's rate tokens (a store batch pays for each search past the first)."""
    api = APIRouter(prefix="/v1/faces", tags=["faces"], route_class=StrictJSONRoute)
    Auth = Annotated[Principal, Depends(principal)]

    def view(who: Principal, body: _Who, need: str) -> tuple[Any, str, str | None]:
        """The acting user, agent and the cube's view for ``need`` (None: a read with no cube yet)."""
        user = service.actor(who, body.user_id)
        agent = service.agent(who, body.agent_id)
        found: CubeView | None = service.view(user, body.cube_id, need, create=need == "write")
        return found, user, agent  # a CubeView satisfies the faces' CubeAPI

    def store_agent(who: Principal, asked: str | None) -> str | None:
        """The agent a store batch acts as: the key's own; a claim of any other is refused (audited)."""
        if asked is None or asked == who.agent_id:
            return who.agent_id
        raise deny(service.keys.audit, "act_as_agent", who.user_id, asked,
                   "store namespaces of an agent open to that agent's own key only; leave agent_id and "
                   "as_principal out, or create a key for the agent: memcube keys create --user <you> --agent <agent>",
                   {"key_id": who.key_id, "agent_id": who.agent_id})

    @api.post("/search", response_model=None, responses={**ERRORS})
    def face_search(body: SearchIn, who: Auth, request: Request) -> dict[str, Any]:
        """A face's ``cube.search(user_id=...)``: as on a local cube, ``user_id`` filters to that user's memories.

        ``/v1/memories/search`` covers the whole cube (MOS semantics: everything the key's user may read);
        a face bound to a user searches that user's memories only, so the same face code finds the same
        memories on a MemCube and on a RemoteCube. ``user_id`` is also the acting user: another user's id
        is refused (audited) unless the key is an admin's.
        """
        max_k = request.app.state.limits.max_k
        if body.k > max_k:
            raise InvalidInputError(f"k may be at most {max_k}; page through results with a narrower query")
        user = service.actor(who, body.user_id)
        found = service.view(user, body.cube_id, "read")
        if found is None:
            return {"hits": []}
        with search_plan(body.plan):  # a late search embeds in fp32 (late_embed.py)
            hits = found.search(body.query, top_k=body.k, user_id=None if body.user_id is None else user,
                                session_id=body.session_id, agent_id=body.agent_id, kinds=body.kinds, tags=body.tags,
                                metadata=body.metadata, plan=body.plan, time_from=body.time_from,
                                time_to=body.time_to, now=body.now or body.as_of, as_of=body.as_of,
                                current_session=body.current_session)
        return search_answer(found, hits, body.conflicts)

    @api.post("/memories", response_model=None, responses={200: {"model": ListOut}, **ERRORS})
    def face_list(body: ListIn, who: Auth, request: Request) -> dict[str, Any]:
        """A face's ``cube.get_all(user_id=...)``: a page of that user's memories (oldest first), as on a local cube.

        ``GET /v1/memories`` lists the whole cube (MOS semantics); a face bound to a user lists that user's
        memories, filtered in the query, so ``limit`` and ``offset`` count that user's memories only. With no
        ``user_id`` this lists everything the key's user may read. ``user_id`` is also the acting user:
        another user's id is refused (audited) unless the key is an admin's.
        """
        max_page = request.app.state.limits.max_page
        if body.limit > max_page:
            raise InvalidInputError(f"limit may be at most {max_page}; ask again with a larger offset for more")
        user = service.actor(who, body.user_id)
        found = service.view(user, body.cube_id, "read")
        if found is None:
            return {"items": [], "more": False}
        items = found.get_all(user_id=None if body.user_id is None else user, session_id=body.session_id,
                              kinds=body.kinds, limit=body.limit + 1, offset=body.offset,
                              include_archived=body.include_archived)
        return {"items": [item_json(i) for i in items[:body.limit]], "more": len(items) > body.limit}

    @api.post("/conflicts", response_model=None, responses={200: {"model": ConflictsOut}, **ERRORS})
    def face_conflicts(body: ConflictsIn, who: Auth, request: Request) -> dict[str, Any]:
        """A face's ``conflict_notes(cube, items)`` (``organize.links``): the flagged conflicts of these memories.

        Each id is read again in the cube as the acting user (any memory the key may read there; an id the
        cube does not hold, or holds deleted, has no notes), and the notes are computed from those reads,
        never from what the client says a memory is: a note is only ever the text of another live memory of
        the same user (and of the memory's agent or none), as on a local cube. At most ``max_k`` ids.
        """
        max_k = request.app.state.limits.max_k
        if len(body.ids) > max_k:
            raise InvalidInputError(f"ids may hold at most {max_k} memory ids (the search's k bound); ask for one "
                                    "page of hits at a time")
        found, _, _ = view(who, body, "read")
        # a NUL character is in no id a cube can hold on every store (PostgreSQL's text cannot): no notes, never a 500
        ids = [i for i in dict.fromkeys(body.ids) if "\x00" not in i]
        if found is None or not ids:
            return {"conflicts": {}}
        items = list(found.store.get_items(ids).values())
        return {"conflicts": page_notes(found, items, body.chars)}

    @api.post("/store/batch", response_model=None, responses={200: {"model": StoreResults}, **ERRORS})
    def store_batch(body: StoreBatchIn, who: Auth) -> dict[str, Any]:
        """Run a LangGraph ``MemOSStore`` batch (get, put, search, list_namespaces) as the key's user."""
        with _extra("langgraph"):
            from langgraph.store.base import GetOp, ListNamespacesOp, MatchCondition, Op, PutOp, SearchOp

            from ..langgraph.access import Principal as StorePrincipal
            from ..langgraph.store import MemOSStore

        searches = sum(isinstance(op, SearchOpIn) for op in body.ops)
        if charge is not None and searches > 1:  # each search embeds a query: one rate token each
            charge(who, float(searches - 1))
        writes = any(isinstance(op, PutOpIn) for op in body.ops)
        cube, user, _ = view(who, body, "write" if writes else "read")
        # an agent's namespaces open to that agent's key only: a user-wide key naming an agent is refused
        # an as_principal name acts as that name; otherwise an agent key acts as its agent (``agent:<id>`` in
        # created_by and the audit log, as a local run whose context names the agent)
        name = store_agent(who, body.principal) if body.principal is not None else None
        agent = store_agent(who, body.agent_id)
        ops: list[Op] = []
        sources: dict[tuple[tuple[str, ...], str], Sequence[str]] = {}
        for o in body.ops:
            if isinstance(o, GetOpIn):
                ops.append(GetOp(tuple(o.namespace), o.key, o.refresh_ttl))
            elif isinstance(o, PutOpIn):
                ops.append(PutOp(tuple(o.namespace), o.key, o.value, o.index, o.ttl))
                if o.sources:
                    sources[(tuple(o.namespace), o.key)] = list(o.sources)
            elif isinstance(o, SearchOpIn):
                ops.append(SearchOp(tuple(o.namespace_prefix), o.filter, o.limit, o.offset, o.query, o.refresh_ttl))
            else:
                ops.append(ListNamespacesOp(
                    tuple(MatchCondition(c.match_type, tuple(c.path)) for c in o.match_conditions) or None,
                    o.max_depth, o.limit, o.offset))
        if cube is None:  # reads of a user with no cube yet: nothing is there
            return {"results": [None if isinstance(op, GetOp) else [] for op in ops]}
        index: Any = None if body.index is None else {k: v for k, v in body.index.model_dump().items() if v is not None}
        store = MemOSStore(cube, index=index if index != {} else True, plan=body.plan, kind=body.kind)
        acting = StorePrincipal(name=name, agent_id=None if name else agent, user_id=user)
        results = store.run_as(ops, acting, sources=sources)
        return {"results": [_result_json(r) for r in results]}

    @api.post("/store/sweep", response_model=None, responses={200: {"model": Swept}, **ERRORS})
    def store_sweep(body: StoreSweepIn, who: Auth) -> dict[str, Any]:
        """Delete the cube's expired store items now (needs write access to the cube)."""
        with _extra("langgraph"):
            from ..langgraph.store import MemOSStore

        cube, _, _ = view(who, body, "write")
        assert cube is not None
        return {"swept": MemOSStore(cube).sweep_ttl()}

    @api.post("/store/grant", response_model=None, responses={200: {"model": Status}, **ERRORS})
    def store_grant(body: GrantIn, who: Auth) -> dict[str, Any]:
        """Grant or revoke store access under a namespace prefix: the cube's owner only (audited in the cube)."""
        with _extra("langgraph"):
            from ..langgraph.access import NamespacePolicy

        user = service.actor(who, None)
        cube = service.view(user, body.cube_id, "owner")
        if cube is None:
            raise CubeNotFoundError("you have no cube yet; a first write creates it, or name one with cube_id")
        policy = NamespacePolicy(cube)  # type: ignore[arg-type]  # a CubeView satisfies the faces' CubeAPI
        if body.access is None:
            policy.revoke(tuple(body.prefix), body.principal)
        else:
            policy.grant(tuple(body.prefix), body.principal, body.access)
        return {"status": "granted" if body.access else "revoked"}

    @api.post("/chat-history", response_model=None, responses={200: {"model": MessagesOut}, **ERRORS})
    def chat_history(body: HistoryIn, who: Auth) -> dict[str, Any]:
        """A LangChain ``MemOSChatMessageHistory`` call on one session, as the key's user."""
        with _extra("langchain"):
            from langchain_core.messages import message_to_dict, messages_from_dict

            from ..langchain.chat_history import MemOSChatMessageHistory

        cube, user, agent = view(who, body, "read" if body.op in _READS else "write")
        if cube is None:
            return {"messages": []}
        history = MemOSChatMessageHistory(cube, body.session_id, user_id=user, agent_id=agent, remember=body.remember)
        if body.op == "messages":
            try:
                return {"messages": [message_to_dict(m) for m in history.messages]}
            except AccessDeniedError:  # another user's session (audited in the cube): as unknown, so its name stays hidden
                return {"messages": []}
        if body.op == "add":
            try:
                messages = messages_from_dict(body.messages)
            except (KeyError, ValueError, TypeError) as exc:
                raise InvalidInputError(f"messages must be LangChain message_to_dict() rows ({type(exc).__name__}: "
                                        f"{str(exc)[:200]})") from None
            history.add_messages(messages)
        else:
            history.clear()
        return {"messages": []}

    @api.post("/llama-chat", response_model=None, responses={200: {"model": LlamaChatOut}, **ERRORS})
    def llama_chat(body: LlamaChatIn, who: Auth) -> dict[str, Any]:
        """A LlamaIndex chat-store operation on the key's user's chat rows."""
        with _extra("llama-index"):
            from ..llama_index.chat_store import ChatTable, messages_from_json

        cube, user, _ = view(who, body, "read" if body.op in _READS else "write")
        if cube is None:
            return {"rows": [], "count": 0, "keys": []}
        table = ChatTable(cube, lambda: user)
        key = _required(body.key, "key", body.op) if body.op != "keys" else ""

        def dump(m: Any) -> dict[str, Any]:
            return dict(m.model_dump(mode="json"))

        if body.op == "rows":
            return {"rows": [[seq, dump(m)] for seq, m in table.rows(key, body.status, body.limit, body.offset)]}
        if body.op == "count":
            return {"count": table.count(key, body.status)}
        if body.op == "add":
            _no_server_paths(body.messages)
            table.add(key, messages_from_json(body.messages), body.status or "active", replace=body.replace)
            return {}
        if body.op == "delete_at":
            found = table.delete_at(key, body.status, _required(body.index, "index", body.op))
            return {"message": None if found is None else dump(found)}
        if body.op == "delete_seq":
            found = table.delete_seq(key, _required(body.seq, "seq", body.op))
            return {"message": None if found is None else dump(found)}
        if body.op == "delete_all":
            return {"messages": [dump(m) for m in table.delete_all(key, body.status)]}
        if body.op == "oldest":
            return {"messages": [dump(m) for m in table.oldest(key, _required(body.n, "n", body.op), body.archive)]}
        return {"keys": table.keys()}

    @api.post("/llama-kv", response_model=None, responses={200: {"model": LlamaKVOut}, **ERRORS})
    def llama_kv(body: LlamaKVIn, who: Auth) -> dict[str, Any]:
        """A LlamaIndex ``MemOSKVStore`` operation on the key's user's collections."""
        with _extra("llama-index"):
            from ..llama_index.kvstore import MemOSKVStore

        cube, user, _ = view(who, body, "read" if body.op in _READS else "write")
        if cube is None:
            return {"value": None, "values": {}, "deleted": False}
        kv = MemOSKVStore(cube, user_id=user)
        if body.op == "put_all":
            kv.put_all([(k, v) for k, v in body.pairs], body.collection)
            return {}
        if body.op == "get":
            return {"value": kv.get(_required(body.key, "key", body.op), body.collection)}
        if body.op == "get_all":
            return {"values": kv.get_all(body.collection)}
        return {"deleted": kv.delete(_required(body.key, "key", body.op), body.collection)}

    return api


@contextmanager
def _extra(name: str) -> Iterator[None]:
    """Imports of a face the server may not have installed: a 501 that names the extra, not a 500."""
    try:
        yield
    except ImportError as exc:  # MissingExtraError is an ImportError too
        raise UnsupportedError(f"this service cannot run the {name} face: install memos-integrations[{name}] where "
                               f"`memcube serve` runs ({exc})") from None


def _no_server_paths(messages: list[dict[str, Any]]) -> None:
    """Refuse content blocks that name a file: llama_index reads a block's ``path`` while validating it, and
    on the service that is the server's file system (an existence probe, a huge file read whole)."""
    for n, message in enumerate(messages):
        blocks = message.get("blocks")
        for b, block in enumerate(blocks if isinstance(blocks, list) else []):
            if isinstance(block, dict) and block.get("path") is not None:
                raise InvalidInputError(f"messages[{n}].blocks[{b}] names a path; the service does not read its own "
                                        "files for a client: send the content itself (base64 data) or a url")


def _required(value: Any, name: str, op: str) -> Any:
    if value is None:
        raise InvalidInputError(f"op {op!r} needs {name!r}; see /openapi.json for the request shape")
    return value


def _when(value: datetime) -> str:
    return value.isoformat()


def _result_json(result: Any) -> Any:
    """A store result as JSON: an item (with ``score`` for a search hit), a list of them, or namespaces."""
    if result is None:
        return None
    if isinstance(result, list):
        return [list(r) if isinstance(r, tuple) else _result_json(r) for r in result]
    out = {"namespace": list(result.namespace), "key": result.key, "value": result.value,
           "created_at": _when(result.created_at), "updated_at": _when(result.updated_at)}
    if hasattr(result, "score"):
        out["score"] = result.score
    return out
