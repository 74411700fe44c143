"""The namespaced faces on a :class:`~memos_integrations.remote.RemoteCube`: their operations, sent to the service.

Where it sits: LangGraph's :class:`~memos_integrations.langgraph.MemOSStore`, LangChain's
:class:`~memos_integrations.langchain.MemOSChatMessageHistory` and LlamaIndex's chat and KV stores keep
their state in tables of the cube's database, which cannot cross HTTP. Given a ``RemoteCube`` they call
the objects here instead, which send each *face operation* (a store batch, a history read or append, a
chat-table or KV call) to ``/v1/faces/...`` (:mod:`memos_integrations.server.routes_store`); the service
runs the same face code on the real cube as the API key's user. So the user's code stays
``MemOSStore(cube)`` whatever the cube is.

Who acts: the client sends who its run or binding names (``user_id``, ``agent_id``, an ``as_principal``
name) only as a claim; the service acts as the key's user and agent and refuses (audited) a claim
naming someone else. Access rules (namespaces, sessions) are the service's, applied by the face there.

Validation: each operation is checked here first with the face's own checks (so a bad namespace is the
same :class:`InvalidNamespaceError` as locally, with no request sent) and must be JSON: a value that is
not (an object, a NaN) is refused here with :class:`InvalidTypeError` / :class:`InvalidInputError`.

Sync/async: synchronous HTTP (the cube's ``httpx.Client``); the faces' async methods run these calls in
a worker thread, as they do for a local cube.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import BackendError, InvalidInputError, InvalidTypeError

if TYPE_CHECKING:
    from .remote import RemoteCube

#: the service's routes for the namespaced faces
STORE_BATCH = "/v1/faces/store/batch"
STORE_SWEEP = "/v1/faces/store/sweep"
STORE_GRANT = "/v1/faces/store/grant"
CHAT_HISTORY = "/v1/faces/chat-history"
LLAMA_CHAT = "/v1/faces/llama-chat"
LLAMA_KV = "/v1/faces/llama-kv"


def remote_of(cube: Any) -> RemoteCube | None:
    """``cube`` if it is a :class:`RemoteCube` (its faces then speak HTTP), else None."""
    from .remote import RemoteCube

    return cube if isinstance(cube, RemoteCube) else None


def post(cube: RemoteCube, route: str, body: Mapping[str, Any], what: str, *, keep_none: bool = False) -> dict[str, Any]:
    """POST ``body`` (checked to be JSON; its None fields left out unless ``keep_none``) to ``route`` of the
    cube's service; the answer's JSON object."""
    clean = dict(body) if keep_none else {k: v for k, v in body.items() if v is not None}
    try:
        json.dumps(clean, allow_nan=False)
    except TypeError as exc:
        raise InvalidTypeError(f"{what} sends JSON to the memory service and this is not JSON ({exc}); "
                               "store strings, numbers, booleans, lists and dicts") from None
    except ValueError as exc:
        raise InvalidInputError(f"{what} sends JSON to the memory service and this is not JSON ({exc}); "
                                "NaN and infinity have no JSON form") from None
    data = cube._call("POST", route, json=clean)
    if not isinstance(data, dict):
        raise BackendError(f"POST {route} answered {str(data)[:200]}, not a JSON object; check the service's version")
    return data


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], route: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise BackendError(f"POST {route} answered no {name!r} of the expected type: {str(data)[:200]}; "
                           "check that the service and client versions match")
    return value


# -- LangGraph store -------------------------------------------------------------------------------------
class RemoteStoreOps:
    """What a :class:`MemOSStore` on a RemoteCube runs instead of its SQL: batches and sweeps over HTTP.

    Args:
        cube: the remote cube.
        index: the store's index config (``fields``, ``dims``; a custom ``embed`` cannot cross HTTP).
        plan: the retrieval plan for semantic search.
        kind: the memory kind of index items.
    """

    def __init__(self, cube: RemoteCube, *, index: Any, plan: Any, kind: Any) -> None:
        self.cube = cube
        if index is None or index is False:
            self.index: dict[str, Any] | None = None
        else:
            config = {} if index is True else dict(index)
            if config.get("embed") is not None:
                raise InvalidInputError(
                    "MemOSStore on a RemoteCube embeds on the service with the cube's own embedder: drop "
                    "index['embed'] (keep 'fields' and 'dims'), or use a local MemCube for a custom embedder")
            self.index = {k: config[k] for k in ("fields", "dims") if config.get(k) is not None}
        if not isinstance(plan, str):
            raise InvalidInputError("MemOSStore on a RemoteCube takes plan='fast', 'balanced' or 'deep' by name")
        self.plan, self.kind = plan, getattr(kind, "value", kind)

    def run(self, ops: Sequence[Any], principal: Any = None,
            sources: Mapping[tuple[tuple[str, ...], str], Sequence[str]] | None = None) -> list[Any]:
        """Send one batch; the results as ``BaseStore.batch`` returns them.

        Args:
            ops: GetOp, PutOp, SearchOp and ListNamespacesOp (validated by the store already).
            principal: who the run names (a claim the service checks against the key), or None.
            sources: provenance per (namespace, key) of a put.

        Returns:
            One result per op: an ``Item`` or None, a list of ``SearchItem``, a list of namespaces, None.

        Raises:
            AccessDeniedError: the service refused a namespace or the claimed principal (audited there).
        """
        body: dict[str, Any] = {
            "ops": [_op_json(op, sources or {}) for op in ops], "index": self.index, "plan": self.plan, "kind": self.kind,
        }
        if principal is not None:
            body.update(user_id=principal.user_id, agent_id=principal.agent_id, principal=principal.name)
        if not ops:
            return []
        data = post(self.cube, STORE_BATCH, body, "MemOSStore")
        results = _field(data, "results", list, STORE_BATCH)
        if len(results) != len(ops):
            raise BackendError(f"POST {STORE_BATCH} answered {len(results)} results for {len(ops)} operations; "
                               "check that the service and client versions match")
        return [_result(op, r) for op, r in zip(ops, results)]

    def grant(self, prefix: tuple[str, ...], principal: str, access: str | None) -> None:
        """Open (``"read"`` / ``"write"``) or close (None) ``prefix`` to ``principal`` in the service's
        cube policy; only the cube's owner may (others get a 403, audited)."""
        from .langgraph.store_logic import check_labels

        check_labels(prefix, for_write=True)
        post(self.cube, STORE_GRANT, {"prefix": list(prefix), "principal": principal, "access": access},
             "NamespacePolicy.grant", keep_none=True)  # access null: revoke

    def sweep(self) -> int:
        """Delete the cube's expired items on the service now; how many."""
        return int(_field(post(self.cube, STORE_SWEEP, {}, "MemOSStore.sweep_ttl"), "swept", int, STORE_SWEEP))


def _op_json(op: Any, sources: Mapping[tuple[tuple[str, ...], str], Sequence[str]]) -> dict[str, Any]:
    from langgraph.store.base import GetOp, ListNamespacesOp, PutOp, SearchOp

    if isinstance(op, GetOp):
        return {"op": "get", "namespace": list(op.namespace), "key": op.key, "refresh_ttl": op.refresh_ttl}
    if isinstance(op, PutOp):
        out = {"op": "put", "namespace": list(op.namespace), "key": op.key, "value": op.value,
               "index": list(op.index) if isinstance(op.index, (list, tuple)) else op.index, "ttl": op.ttl}
        given = sources.get((tuple(op.namespace), op.key))
        if given:
            out["sources"] = list(given)
        if op.value is None:  # a delete: the key must be sent with an explicit null
            return out
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(op, SearchOp):
        return {"op": "search", "namespace_prefix": list(op.namespace_prefix), "query": op.query, "filter": op.filter,
                "limit": op.limit, "offset": op.offset, "refresh_ttl": op.refresh_ttl}
    if isinstance(op, ListNamespacesOp):
        return {"op": "list_namespaces", "max_depth": op.max_depth, "limit": op.limit, "offset": op.offset,
                "match_conditions": [{"match_type": c.match_type, "path": list(c.path)} for c in op.match_conditions or ()]}
    raise InvalidTypeError(f"unknown store operation {type(op).__name__}; use GetOp, PutOp, SearchOp or ListNamespacesOp")


def _result(op: Any, data: Any) -> Any:
    from langgraph.store.base import GetOp, Item, ListNamespacesOp, PutOp, SearchItem

    if isinstance(op, PutOp):
        return None
    if isinstance(op, GetOp):
        return None if data is None else Item(**_item_fields(data))
    if not isinstance(data, list):
        raise BackendError(f"POST {STORE_BATCH} answered {str(data)[:200]} for a {type(op).__name__}; expected a list")
    if isinstance(op, ListNamespacesOp):
        return [tuple(ns) for ns in data]
    return [SearchItem(**_item_fields(row), score=row.get("score")) for row in data]


def _item_fields(data: Any) -> dict[str, Any]:
    try:
        return {"namespace": tuple(data["namespace"]), "key": data["key"], "value": data["value"],
                "created_at": datetime.fromisoformat(data["created_at"]),
                "updated_at": datetime.fromisoformat(data["updated_at"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(f"POST {STORE_BATCH} answered an item this client cannot read ({exc}): {str(data)[:200]}; "
                           "check that the service and client versions match") from None


# -- LangChain chat history ------------------------------------------------------------------------------
class RemoteHistory:
    """One session of a ``MemOSChatMessageHistory`` on a RemoteCube: read, append, clear over HTTP."""

    def __init__(self, cube: RemoteCube, session_id: str) -> None:
        self.cube, self.session_id = cube, session_id

    def call(self, op: str, scope: Any, *, messages: list[dict[str, Any]] | None = None,
             remember: bool = False) -> list[dict[str, Any]]:
        body = {"op": op, "session_id": self.session_id, "user_id": scope.user_id, "agent_id": scope.agent_id,
                "messages": messages, "remember": remember or None}
        data = post(self.cube, CHAT_HISTORY, body, "MemOSChatMessageHistory")
        return list(_field(data, "messages", list, CHAT_HISTORY))


# -- LlamaIndex chat store -------------------------------------------------------------------------------
class RemoteChatTable:
    """:class:`~memos_integrations.llama_index.chat_store.ChatTable`'s operations, run by the service."""

    def __init__(self, cube: RemoteCube, user_of: Callable[[], str | None]) -> None:
        self.cube, self.user_of = cube, user_of

    def _call(self, op: str, **args: Any) -> dict[str, Any]:
        return post(self.cube, LLAMA_CHAT, {"op": op, "user_id": self.user_of(), **args}, "MemOSChatStore")

    @staticmethod
    def _check(key: Any, messages: list[Any] | None = None) -> None:
        from .llama_index.chat_store import ChatTable

        ChatTable._check(key, messages)

    @staticmethod
    def _messages(data: Mapping[str, Any], name: str = "messages") -> list[Any]:
        from .llama_index.chat_store import messages_from_json

        return messages_from_json(_field(data, name, list, LLAMA_CHAT))

    @staticmethod
    def _message(data: Mapping[str, Any]) -> Any:
        found = data.get("message")
        if found is None:
            return None
        from .llama_index.chat_store import messages_from_json

        return messages_from_json([found])[0]

    def rows(self, key: str, status: str | None = None, limit: int | None = None, offset: int | None = None
             ) -> list[tuple[int, Any]]:
        self._check(key)
        rows = _field(self._call("rows", key=key, status=status, limit=limit, offset=offset), "rows", list, LLAMA_CHAT)
        from .llama_index.chat_store import messages_from_json

        found = messages_from_json([r[1] for r in rows])
        return [(int(r[0]), m) for r, m in zip(rows, found)]

    def count(self, key: str, status: str | None = None) -> int:
        self._check(key)
        return int(_field(self._call("count", key=key, status=status), "count", int, LLAMA_CHAT))

    def add(self, key: str, messages: list[Any], status: str = "active", replace: bool = False) -> None:
        self._check(key, messages)
        self._call("add", key=key, status=status, replace=replace or None,
                   messages=[m.model_dump(mode="json") for m in messages])

    def delete_at(self, key: str, status: str | None, index: int) -> Any:
        self._check(key)
        return self._message(self._call("delete_at", key=key, status=status, index=index))

    def delete_seq(self, key: str, seq: int) -> Any:
        self._check(key)
        if isinstance(seq, bool) or not isinstance(seq, int):
            return None
        return self._message(self._call("delete_seq", key=key, seq=seq))

    def delete_all(self, key: str, status: str | None = None) -> list[Any]:
        self._check(key)
        return self._messages(self._call("delete_all", key=key, status=status))

    def oldest(self, key: str, n: int, archive: bool) -> list[Any]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInputError(f"n must be a non-negative integer, got {n!r}")
        self._check(key)
        return self._messages(self._call("oldest", key=key, n=n, archive=archive or None))

    def keys(self) -> list[str]:
        return [str(k) for k in _field(self._call("keys"), "keys", list, LLAMA_CHAT)]


# -- LlamaIndex KV store ---------------------------------------------------------------------------------
class RemoteKV:
    """``MemOSKVStore``'s four operations, run by the service on the acting user's collections."""

    def __init__(self, cube: RemoteCube) -> None:
        self.cube = cube

    def _call(self, op: str, user_id: str | None, collection: str, **args: Any) -> dict[str, Any]:
        return post(self.cube, LLAMA_KV, {"op": op, "user_id": user_id, "collection": collection, **args}, "MemOSKVStore")

    def put_all(self, user_id: str | None, collection: str, pairs: Sequence[tuple[str, dict]]) -> None:
        self._call("put_all", user_id, collection, pairs=[[k, v] for k, v in pairs])

    def get(self, user_id: str | None, collection: str, key: str) -> dict | None:
        value = self._call("get", user_id, collection, key=key).get("value")
        return value if isinstance(value, dict) else None

    def get_all(self, user_id: str | None, collection: str) -> dict[str, dict]:
        return dict(_field(self._call("get_all", user_id, collection), "values", dict, LLAMA_KV))

    def delete(self, user_id: str | None, collection: str, key: str) -> bool:
        return bool(self._call("delete", user_id, collection, key=key).get("deleted"))
