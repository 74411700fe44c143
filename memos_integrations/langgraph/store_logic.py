"""Pure functions behind :class:`MemOSStore`: namespaces, value filters, index texts, TTL arithmetic.

Where it sits: the logic half of the LangGraph store (style rule "logic once, I/O twice at most");
``store.py`` does the SQLite and cube calls. Nothing here touches storage, so it is tested directly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from langgraph.store.base import InvalidNamespaceError, MatchCondition, tokenize_path
from langgraph.store.base.embed import get_text_at_path

from ..errors import InvalidFilterError, InvalidInputError

OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
#: parent_id prefix of the cube items that index store values (the namespace is their parent)
PARENT_PREFIX = "lgns:"


class InvalidStoreNamespaceError(InvalidInputError, InvalidNamespaceError):
    """A namespace LangGraph forbids: empty, the reserved root ``langgraph``, or a bad label."""


# -- namespaces ---------------------------------------------------------------------------------
def check_labels(namespace: Any, *, for_write: bool = False) -> tuple[str, ...]:
    """Validate a namespace (a tuple of labels) and return it; a write needs at least one label."""
    if not isinstance(namespace, tuple):
        raise InvalidStoreNamespaceError(f"a namespace is a tuple of strings, got {type(namespace).__name__}")
    for label in namespace:
        if not isinstance(label, str):
            raise InvalidStoreNamespaceError(f"namespace labels must be strings, got {label!r} in {namespace}")
        if not label:
            raise InvalidStoreNamespaceError(f"namespace labels cannot be empty strings: {namespace}")
        if "." in label or "\x00" in label:
            raise InvalidStoreNamespaceError(
                f"namespace label {label!r} in {namespace} contains '.' or NUL; use separate labels: ('a', 'b')"
            )
    if for_write:
        if not namespace:
            raise InvalidStoreNamespaceError("a namespace cannot be empty; use e.g. ('users', user_id, 'memories')")
        if namespace[0] == "langgraph":
            raise InvalidStoreNamespaceError(f"the root label 'langgraph' is reserved by LangGraph: {namespace}")
    return namespace


def encode(namespace: Sequence[str]) -> str:
    """Labels joined with '.', which labels cannot contain, so the encoding is unambiguous."""
    return ".".join(namespace)


def decode(ns: str) -> tuple[str, ...]:
    return tuple(ns.split(".")) if ns else ()


def prefix_range(prefix: Sequence[str]) -> tuple[str, str] | None:
    """A [low, high) string range holding exactly the encoded namespaces under ``prefix`` (None: all)."""
    if not prefix:
        return None
    p = encode(prefix)
    # '/' follows '.', so [p + '.', p + '/') are the descendants; p itself is added by the caller
    return p + ".", p + "/"


def parent_of(namespace: Sequence[str]) -> str:
    """The cube parent_id of a namespace's index items (with a trailing '.' so prefixes stay exact)."""
    return PARENT_PREFIX + encode(namespace) + "." if namespace else PARENT_PREFIX


def matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = condition.path
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path))
    else:
        raise InvalidInputError(f"unknown match type {condition.match_type!r}; use 'prefix' or 'suffix'")
    return all(p == "*" or label == p for label, p in pairs)


def list_namespaces(
    namespaces: Iterable[tuple[str, ...]], conditions: Sequence[MatchCondition] | None,
    max_depth: int | None, limit: int, offset: int,
) -> list[tuple[str, ...]]:
    found = [ns for ns in namespaces if all(matches(c, ns) for c in conditions or ())]
    if max_depth is not None:
        found = list({ns[:max_depth] for ns in found})
    return sorted(found)[offset : offset + limit]


def default_scope(namespace: Sequence[str]) -> dict[str, str]:
    """Cube scope of a namespace: the label after 'users'/'user' is the user, after 'agents'/'agent' the agent."""
    scope: dict[str, str] = {}
    for label, nxt in zip(namespace, namespace[1:]):
        if label in ("users", "user") and "user_id" not in scope:
            scope["user_id"] = nxt
        elif label in ("agents", "agent") and "agent_id" not in scope:
            scope["agent_id"] = nxt
    return scope


# -- values and filters -------------------------------------------------------------------------
def check_value(value: Any) -> str:
    """The JSON text of a value to store; a value must be a JSON object."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"a store value is a dict (JSON object), got {type(value).__name__}")
    try:
        return json.dumps(dict(value), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"store values must be JSON-serialisable: {exc}") from None


def check_filter(flt: Any) -> dict[str, Any] | None:
    if flt is None:
        return None
    if not isinstance(flt, Mapping):
        raise InvalidFilterError(f"filter must be a dict of field -> value or {{operator: value}}, got {type(flt).__name__}")

    def walk(cond: Any, key: str) -> None:
        if isinstance(cond, Mapping) and any(str(k).startswith("$") for k in cond):
            for op, v in cond.items():
                if op not in OPERATORS:
                    raise InvalidFilterError(f"unknown operator {op!r} for {key!r}; use one of {', '.join(OPERATORS)}")
                if op in ("$gt", "$gte", "$lt", "$lte") and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise InvalidFilterError(f"{op} for {key!r} needs a number, got {v!r}")
        elif isinstance(cond, Mapping):
            for k, v in cond.items():
                walk(v, f"{key}.{k}")

    for key, cond in flt.items():
        walk(cond, key)
    return dict(flt)


def value_matches(value: Mapping[str, Any], flt: Mapping[str, Any] | None) -> bool:
    """InMemoryStore's filter semantics (JSONB-like), except that a missing or non-numeric field never
    matches a range operator (InMemoryStore raises there)."""
    return not flt or all(_compare(value.get(k), cond) for k, cond in flt.items())


def _compare(actual: Any, cond: Any) -> bool:
    if isinstance(cond, Mapping):
        if any(str(k).startswith("$") for k in cond):
            return all(_apply(actual, op, v) for op, v in cond.items())
        return isinstance(actual, Mapping) and all(_compare(actual.get(k), v) for k, v in cond.items())
    if isinstance(cond, (list, tuple)):
        return (isinstance(actual, (list, tuple)) and len(actual) == len(cond)
                and all(_compare(a, c) for a, c in zip(actual, cond)))
    return bool(actual == cond)


def _apply(actual: Any, op: str, target: Any) -> bool:
    if op == "$eq":
        return bool(actual == target)
    if op == "$ne":
        return bool(actual != target)
    try:
        a, t = float(actual), float(target)
    except (TypeError, ValueError):
        return False
    return {"$gt": a > t, "$gte": a >= t, "$lt": a < t, "$lte": a <= t}[op]


# -- what gets embedded -------------------------------------------------------------------------
def index_texts(value: Mapping[str, Any], paths: Sequence[str] | None, max_chars: int | None = None) -> list[tuple[str, str]]:
    """(path label, text) pairs to index; an array path yields one text per element (``path.i``), and a text
    longer than ``max_chars`` (what the cube accepts) one per piece (``path#i``).

    >>> index_texts({"text": "abcdefg"}, ["text"], max_chars=3)
    [('text#0', 'abc'), ('text#1', 'def'), ('text#2', 'g')]
    """
    out: list[tuple[str, str]] = []
    for path in paths or ("$",):
        texts = [t for t in get_text_at_path(value, path if path == "$" else tokenize_path(path)) if t.strip()]
        labelled = [(path, texts[0])] if len(texts) == 1 else [(f"{path}.{i}", t) for i, t in enumerate(texts)]
        for label, text in labelled:
            if max_chars is None or len(text) <= max_chars:
                out.append((label, text))
                continue
            pieces = [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
            out.extend((f"{label}#{i}", piece) for i, piece in enumerate(pieces) if piece.strip())
    return out


def check_index_arg(index: Any) -> None:
    if index is None or index is False:
        return
    if not isinstance(index, (list, tuple)) or not all(isinstance(p, str) and p for p in index):
        raise InvalidInputError(f"index must be False, None or a list of field paths, got {index!r}")


def index_item_id(ns: str, key: str, path: str) -> str:
    """Stable cube item id of one indexed text: the same (namespace, key, field) is a new version."""
    return "lg-" + hashlib.sha256(f"{ns}\x00{key}\x00{path}".encode()).hexdigest()[:32]


# -- TTL ------------------------------------------------------------------------------------------
def expiry(now: float, ttl_minutes: float | None) -> float | None:
    if ttl_minutes is None:
        return None
    if isinstance(ttl_minutes, bool) or not isinstance(ttl_minutes, (int, float)) or ttl_minutes <= 0:
        raise InvalidInputError(f"ttl is a positive number of minutes or None, got {ttl_minutes!r}")
    return now + float(ttl_minutes) * 60.0


Readable = Callable[[tuple[str, ...]], bool]
