"""Prebuilt memory nodes and tools for LangGraph graphs (and LangChain v1 agents).

Where it sits: the top of the LangGraph face. ``recall`` searches the store for the latest user
message and puts the memories into state; ``remember`` writes what the user said, with provenance
(``thread:<id>``, ``checkpoint:<id>``, ``user:<id>``); ``search_memory`` / ``save_memory`` /
``forget_memory`` are LangChain tools that a ``ToolNode`` or ``create_agent`` can call.

Conflicts: on a :class:`~memos_integrations.langgraph.MemOSStore` over an organised cube, a recalled value
flagged as contradicting another memory of its user ends with the shared note
(:func:`memos_integrations.prompting.conflict_note`: ``... (conflicts with: "I live in Lisbon.")``), and
``search_memory`` answers those texts in a ``conflicts`` field beside the value's own text; one batch per
page (:func:`store_conflicts`). Any other ``BaseStore`` has no links: plain lines.

Namespaces are templates filled from who is acting: ``("users", "{user_id}", "memories")`` takes the
user from :func:`memos_integrations.access.resolve_scope`, in the order binding (``user_id=`` given to
the factory) > the run's ``context=`` > ``config["configurable"]``; ids are normalised (an int user id
is its string). Other ``{name}`` labels come from ``configurable``. A run without the value is a clear
error, never a write to a shared default.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool

from ..access import Scope, resolve_scope
from ..errors import InvalidInputError, MemosError
from ..items import MemoryItem, new_id
from ..organize.links import conflict_notes, flagged_conflicts
from ..prompting import conflict_note

DEFAULT_NAMESPACE = ("users", "{user_id}", "memories")


def acting(config: RunnableConfig | None, bound: dict[str, Any] | None = None, store: Any = None) -> Scope:
    """Who a node or tool acts for: binding > the run's ``context=`` > ``configurable``."""
    audit = getattr(getattr(store, "cube", None), "audit", None)
    return resolve_scope(bound=bound, config=config, audit=audit, what="this memory node",
                         fields=("user_id", "agent_id"))


def resolve_namespace(template: Sequence[str], config: RunnableConfig | None, scope: Scope | None = None) -> tuple[str, ...]:
    """Fill ``{name}`` labels: ``{user_id}`` / ``{agent_id}`` / ``{session_id}`` from who is acting, the rest
    from ``config["configurable"]``."""
    scope = scope if scope is not None else acting(config)
    values = {k: v for k, v in ((config or {}).get("configurable") or {}).items() if isinstance(k, str)}
    values.update({k: v for k, v in scope.as_dict().items() if v is not None})
    out = []
    for label in template:
        try:
            out.append(label.format(**values))
        except KeyError as exc:
            raise InvalidInputError(
                f"namespace {tuple(template)} needs {exc.args[0]!r}: pass it in the run's context "
                f"(graph.invoke(..., context={{{exc.args[0]!r}: ...}})) or config "
                f"(graph.invoke(..., {{'configurable': {{{exc.args[0]!r}: ...}}}}))"
            ) from None
    return tuple(out)


def provenance(config: RunnableConfig | None, scope: Scope | None = None) -> list[str]:
    """Source pointers for a memory written during a run: its thread, checkpoint and user."""
    conf = (config or {}).get("configurable") or {}
    user = scope.user_id if scope is not None else acting(config).user_id
    out = []
    if conf.get("thread_id"):
        out.append(f"thread:{conf['thread_id']}")
    # inside a run the task's config maps namespaces to the checkpoint the step started from
    cmap = conf.get("checkpoint_map") or {}
    checkpoint = conf.get("checkpoint_id") or cmap.get("") or (list(cmap.values())[-1] if cmap else None)
    if checkpoint:
        out.append(f"checkpoint:{checkpoint}")
    if user:
        out.append(f"user:{user}")
    return out


def _text(message: Any) -> str:
    if isinstance(message, BaseMessage):
        content = message.content
    elif isinstance(message, dict):
        content = message.get("content", "")
    elif isinstance(message, tuple) and len(message) == 2:
        content = message[1]
    else:
        content = message
    if isinstance(content, list):  # multimodal content blocks: keep the text parts
        content = " ".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in content)
    return str(content)


def _is_user(message: Any) -> bool:
    kind = getattr(message, "type", None) or (message.get("role") if isinstance(message, dict) else None)
    if isinstance(message, tuple):
        kind = message[0]
    return kind in ("human", "user")


def last_user_text(messages: Sequence[Any]) -> str | None:
    for message in reversed(messages or []):
        if _is_user(message):
            return _text(message)
    return None


def _binding(user_id: Any, agent_id: Any) -> dict[str, Any] | None:
    return {"user_id": user_id, "agent_id": agent_id} if user_id is not None or agent_id is not None else None


def make_recall_node(
    store: Any, *, namespace: Sequence[str] = DEFAULT_NAMESPACE, top_k: int = 5,
    messages_key: str = "messages", output_key: str = "memories", user_id: Any = None, agent_id: Any = None,
) -> Callable[[dict[str, Any], RunnableConfig], dict[str, Any]]:
    """A node that puts the memories relevant to the latest user message into ``state[output_key]``.

    Args:
        store: any ``BaseStore`` (a :class:`MemOSStore` checks the run's principal itself).
        namespace: template filled from who is acting (``{user_id}``, ``{agent_id}``) and ``configurable``.
        top_k: how many memories.
        messages_key, output_key: the state keys read and written.
        user_id, agent_id: a binding; a run naming someone else is refused.

    Example:
        >>> import tempfile
        >>> from memos_integrations import MemCube
        >>> from memos_integrations.langgraph import MemOSStore
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> store = MemOSStore(cube, index=True)
        >>> store.put(("users", "alice", "memories"), "m1", {"text": "Alice is allergic to peanuts"})
        >>> recall = make_recall_node(store)
        >>> recall({"messages": [("user", "any food allergies?")]}, {"configurable": {"user_id": "alice"}})
        {'memories': ['Alice is allergic to peanuts']}
        >>> cube.close()

    A memory flagged as contradicting another of the user's (an organised cube) is recalled with the note
    ``' (conflicts with: "...")'`` after its text (see the module docstring).
    """
    bound = _binding(user_id, agent_id)

    def recall(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        query = last_user_text(state.get(messages_key, []))
        scope = acting(config, bound, store)
        ns = resolve_namespace(namespace, config, scope)
        if not query:
            return {output_key: []}
        hits = store.search(ns, query=query, limit=top_k)
        notes = store_conflicts(store, hits, scope)
        return {output_key: [memory_text(h.value) + conflict_note(n) for h, n in zip(hits, notes)]}

    return recall


def make_remember_node(
    store: Any, *, namespace: Sequence[str] = DEFAULT_NAMESPACE, messages_key: str = "messages",
    extract: Callable[[Sequence[Any]], list[str]] | None = None, user_id: Any = None, agent_id: Any = None,
    mode: str | None = None,
) -> Callable[[dict[str, Any], RunnableConfig], dict[str, Any]]:
    """A node that stores new memories (by default: the latest user message) with provenance.

    ``extract(messages) -> [texts]`` decides what is worth keeping (an LLM extractor, a rule);
    each text becomes ``{"text": ...}`` under a new key, its sources the thread and checkpoint.
    ``user_id`` / ``agent_id`` bind the node (see :func:`make_recall_node`). ``mode`` (``"fine"`` or
    ``"async"``) reads the latest user message with the cube's LLM reader instead and keeps the
    namespace in step with its decision (see :mod:`memos_integrations.readers.faces`).
    """
    bound = _binding(user_id, agent_id)

    def remember(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        messages = state.get(messages_key, [])
        if mode is not None:
            from ..readers.faces import remember_in_store

            scope = acting(config, bound, store)
            text = last_user_text(messages)
            if text and text.strip():
                remember_in_store(store, resolve_namespace(namespace, config, scope), [{"role": "user", "content": text}],
                                  scope=scope, sources=provenance(config, scope), mode=mode,
                                  session_id=((config or {}).get("configurable") or {}).get("thread_id"))
            return {}
        texts = extract(messages) if extract else [t for t in [last_user_text(messages)] if t and t.strip()]
        scope = acting(config, bound, store)
        ns = resolve_namespace(namespace, config, scope)
        for text in texts:
            _save(store, ns, text, config, scope)
        return {}

    return remember


def _save(store: Any, ns: tuple[str, ...], text: str, config: RunnableConfig | None, scope: Scope) -> str:
    key = new_id()
    sources = provenance(config, scope)
    value = {"text": text, "source": sources}
    if hasattr(store, "put_with_provenance"):
        store.put_with_provenance(ns, key, value, sources=sources)
    else:  # any other BaseStore: provenance stays in the value
        store.put(ns, key, value)
    return key


def memory_text(value: dict[str, Any]) -> str:
    return str(value.get("text") or value.get("memory") or value.get("content") or value)


def store_conflicts(store: Any, hits: Sequence[Any], scope: Scope | None = None) -> list[list[str]]:
    """Per hit (a store ``SearchItem``), the short texts of the memories its indexed texts are flagged as
    contradicting, in one batch for the page; empty lists for a store that is no ``MemOSStore`` (or one
    ``as_principal`` wraps), or when the lookup fails.

    Locally, a note is :func:`~memos_integrations.organize.links.flagged_conflicts`'s (another live memory
    of the hit's user and agent) that the acting principal may also read: another store value only in a
    namespace the store's policy opens to it, a memory outside the store only when it is the principal's
    user's own; the application acting (no principal) reads every one. The principal is the store's own
    (a LangGraph run's), else the user and agent of ``scope`` (a node called outside a run). On a RemoteCube the service
    computes them (:meth:`~memos_integrations.remote.RemoteCube.conflict_notes`) for the key's user, who
    may read the whole cube."""
    base = store if hasattr(store, "tables") else getattr(store, "store", None)
    cube = getattr(base, "cube", None)
    ids = _index_ids(base, hits) if cube is not None and hits else [[] for _ in hits]
    wanted = list(dict.fromkeys(i for per_hit in ids for i in per_hit))
    if not wanted:
        return [[] for _ in hits]
    if getattr(base, "remote", None) is not None:  # the service reads each id again as the key's user
        notes = conflict_notes(cube, [MemoryItem(text=i, id=i) for i in wanted])
    else:
        try:
            notes = _local_notes(store, base, wanted, scope)
        except MemosError:  # a context never fails for want of its notes
            notes = {}
    return [list(dict.fromkeys(n for i in per_hit for n in notes.get(i, ()))) for per_hit in ids]


def _local_notes(store: Any, base: Any, wanted: Sequence[str], scope: Scope | None) -> dict[str, list[str]]:
    """item id -> notes of a local store's index items, kept to what the acting principal may read."""
    raw = base.cube.store
    found = raw.get_items(list(wanted))
    conflicts = flagged_conflicts(base.cube, [found[i] for i in wanted if i in found])
    if conflicts:  # a store value past its TTL is invisible to every store read (its index item lives till a sweep)
        conflicts = _unexpired(base, conflicts)
    principal = (store.acting() or _principal(scope)) if conflicts else None
    if principal is not None:
        others = raw.get_items(sorted({c.other_id for cs in conflicts.values() for c in cs}))
        readable = base.policy.readable(principal)

        def shown(other: MemoryItem | None) -> bool:
            where = (other.metadata.get("lg_store") or {}) if other is not None else {}
            if isinstance(where, dict) and where.get("namespace"):
                return bool(readable(tuple(where["namespace"])))
            return other is not None and other.user_id is not None and other.user_id == principal.user_id

        conflicts = {i: [c for c in cs if shown(others.get(c.other_id))] for i, cs in conflicts.items()}
    return {i: [c.short() for c in cs] for i, cs in conflicts.items() if cs}


def _unexpired(base: Any, conflicts: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """``conflicts`` less the other memories that are index items of a store value no longer live (expired)."""
    from . import store_logic as L

    others = base.cube.store.get_items(sorted({c.other_id for cs in conflicts.values() for c in cs}))
    keyed: dict[str, tuple[str, str]] = {}
    for oid, other in others.items():
        where = other.metadata.get("lg_store")  # any writer's metadata: only a namespace of strings is a store's
        ns = where.get("namespace") if isinstance(where, dict) else None
        if isinstance(ns, list) and ns and all(isinstance(n, str) for n in ns) and isinstance(where.get("key"), str):
            keyed[oid] = (L.encode(tuple(ns)), where["key"])
    if not keyed:
        return conflicts
    live = base.tables.rows_for(sorted(set(keyed.values())), base.clock())
    return {i: [c for c in cs if c.other_id not in keyed or keyed[c.other_id] in live] for i, cs in conflicts.items()}


def _principal(scope: Scope | None) -> Any:
    """The store principal of a node's resolved scope (None: nobody named, the application acts)."""
    from .access import Principal

    if scope is None or (scope.user_id is None and scope.agent_id is None):
        return None
    return Principal(agent_id=scope.agent_id, user_id=scope.user_id)


def _index_ids(store: Any, hits: Sequence[Any]) -> list[list[str]]:
    """The cube item ids each hit's value is indexed as: the store's record locally; on a RemoteCube (no
    table here) the ids its index fields give (``store_logic.index_item_id``)."""
    from . import store_logic as L

    keys = [(L.encode(h.namespace), h.key) for h in hits]
    tables = getattr(store, "tables", None)
    if tables is not None and hasattr(tables, "rows_for"):
        rows = tables.rows_for(keys, store.clock())
        return [json.loads(rows[k][6]) if k in rows else [] for k in keys]  # ROW's last column: item_ids
    remote = getattr(store, "remote", None)
    if remote is None or getattr(remote, "index", None) is None:  # no index: no index items, no notes
        return [[] for _ in hits]
    fields = remote.index.get("fields") or None
    return [[L.index_item_id(ns, key, path) for path, _ in L.index_texts(h.value, fields, store._max_chars())]
            for (ns, key), h in zip(keys, hits)]


def make_memory_tools(
    store: Any, *, namespace: Sequence[str] = DEFAULT_NAMESPACE, top_k: int = 5, user_id: Any = None, agent_id: Any = None,
) -> list[BaseTool]:
    """``search_memory``, ``save_memory`` and ``forget_memory`` tools over ``store`` (usable in a ``ToolNode``).

    The namespace is filled from who is acting in the run the tool is called in (binding > ``context=`` >
    ``configurable``), so one tool list serves every user unless ``user_id`` / ``agent_id`` bind it.
    """
    bound = _binding(user_id, agent_id)

    def search_memory(query: str, config: RunnableConfig) -> list[dict[str, Any]]:
        """Search long-term memory for facts relevant to the query; returns ids and texts."""
        scope = acting(config, bound, store)
        hits = store.search(resolve_namespace(namespace, config, scope), query=query, limit=top_k)
        notes = store_conflicts(store, hits, scope)
        return [{"id": h.key, "text": memory_text(h.value), "score": h.score, **({"conflicts": n} if n else {})}
                for h, n in zip(hits, notes)]

    def save_memory(text: str, config: RunnableConfig) -> str:
        """Save a fact or preference about the user to long-term memory; returns its id."""
        if not text or not text.strip():
            raise InvalidInputError("save_memory needs non-empty text")
        scope = acting(config, bound, store)
        return _save(store, resolve_namespace(namespace, config, scope), text, config, scope)

    def forget_memory(memory_id: str, config: RunnableConfig) -> str:
        """Forget (delete) one memory by the id search_memory returned."""
        ns = resolve_namespace(namespace, config, acting(config, bound, store))
        if store.get(ns, memory_id) is None:
            return f"no memory {memory_id!r}"
        store.delete(ns, memory_id)
        return f"forgot {memory_id}"

    def correct_memory(correction: str, config: RunnableConfig) -> str:
        """Correct what memory holds about the user in words, e.g. "No, I moved to Porto in May"."""
        from ..readers.faces import remember_in_store

        scope = acting(config, bound, store)
        result = remember_in_store(store, resolve_namespace(namespace, config, scope), [{"role": "user", "content": correction}],
                                   scope=scope, sources=provenance(config, scope), mode="fine", feedback=True,
                                   session_id=((config or {}).get("configurable") or {}).get("thread_id"))
        return "; ".join(" ".join(str(x) for x in op) for op in result.operations) or "nothing to change"

    tools = [search_memory, save_memory, forget_memory]
    if getattr(getattr(store, "cube", None), "reader", None) is not None:  # feedback needs the LLM reader
        tools.append(correct_memory)
    return [StructuredTool.from_function(f) for f in tools]
