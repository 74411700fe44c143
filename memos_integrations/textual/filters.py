"""Search and listing filters: one typed description, compiled to SQL and to a Chroma ``where``.

Pure functions only; the stores run what these produce. Every value reaches SQL as a bound
parameter; field names are checked against a fixed table, metadata keys against a safe pattern.

Metadata conditions are a Mongo-style mapping ``{key: value | {operator: value}}``, ANDed. Beyond the
comparison operators, ``$contains`` / ``$any`` / ``$all`` test array members (or substrings of a
string), ``$text_match`` / ``$text_match_insensitive`` test substrings, ``$is_empty`` tests for a
missing, null, ``""`` or ``[]`` value, and ``$and`` / ``$or`` (lists of mappings) and ``$not`` (a
mapping) compose conditions. Inside a composition every leaf is two-valued (a missing key is false,
never SQL NULL), so ``$not`` negates exactly what the leaf matched. The LlamaIndex face compiles
``MetadataFilters`` onto this vocabulary.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import InvalidFilterError, InvalidInputError
from ..items import LIVE_STATES, MAX_SQL_INT, Kind, Lifecycle, check_utf8, to_epoch

#: Operators a metadata condition may use (the LangGraph / Mongo-style vocabulary).
OPERATORS = (
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists",
    "$contains", "$any", "$all", "$text_match", "$text_match_insensitive", "$is_empty",
)
#: Keys that compose metadata conditions instead of naming a metadata field.
BOOLEAN_KEYS = ("$and", "$or", "$not")
_SQL_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_KEY = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_\-.]{0,127}$")
Scalar = (str, int, float, bool)


#: Bounds that keep a filter's SQL inside what SQLite compiles (expression depth 1000, parser stack,
#: 32,766 bound parameters); each limit was measured to fail beyond roughly 2-4x its value.
MAX_FILTER_DEPTH = 16
MAX_FILTER_CONDITIONS = 256  # leaf conditions, each $any/$all value and each tags_all tag counted
MAX_FILTER_VALUES = 5_000  # list values ($in, $nin, $any, $all, tags_any), all together


def _as_list(value: str | Sequence[str] | None, name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        for v in value:
            _utf8(v, name)
        return list(value)
    raise InvalidFilterError(f"{name} must be a string or a list of strings, got {type(value).__name__}")


def _utf8(value: str, what: str) -> None:
    try:
        check_utf8(value, what)
    except InvalidInputError as exc:
        raise InvalidFilterError(str(exc)) from None


class _Budget:
    """Counts what a filter will compile to, so an oversized one is refused before SQLite sees it."""

    def __init__(self) -> None:
        self.conditions = 0
        self.values = 0

    def spend(self, conditions: int = 0, values: int = 0) -> None:
        self.conditions += conditions
        self.values += values
        if self.conditions > MAX_FILTER_CONDITIONS:
            raise InvalidFilterError(
                f"filter has more than {MAX_FILTER_CONDITIONS} conditions (metadata leaves, $any/$all values, "
                "tags_all tags); use $in with a list, or split the query")
        if self.values > MAX_FILTER_VALUES:
            raise InvalidFilterError(
                f"filter lists hold more than {MAX_FILTER_VALUES} values in all; narrow it, or filter the results")


@dataclass
class MemoryFilter:
    """Which items a search or listing may return. Every field narrows; ``None`` means any.

    Example:
        >>> f = MemoryFilter(user_id="caroline", metadata={"speaker": "Caroline", "turn": {"$gte": 3}})
        >>> sql, params = f.to_sql()
        >>> "json_extract" in sql and params[0] == "caroline"
        True
        >>> g = MemoryFilter(metadata={"$or": [{"tags": {"$any": ["a", "b"]}}, {"$not": {"year": {"$lt": 2000}}}]})
        >>> " OR " in g.to_sql()[0]
        True
    """

    user_id: str | Sequence[str] | None = None
    agent_id: str | Sequence[str] | None = None
    session_id: str | Sequence[str] | None = None
    kinds: Sequence[Kind | str] | None = None
    states: Sequence[Lifecycle | str] | None = field(default_factory=lambda: list(LIVE_STATES))
    tags_any: Sequence[str] | None = None
    tags_all: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    #: inclusive bounds on the item's event time (when it happened), falling back to created_at
    time_from: datetime | None = None
    time_to: datetime | None = None
    ids: Sequence[str] | None = None
    parent_id: str | None = None
    #: items whose ``parent_id`` starts with this string (an index range scan: the faces use it
    #: for hierarchical parents such as LangGraph store namespaces)
    parent_prefix: str | None = None
    #: bi-temporal truth: only items valid at this time (valid_from <= as_of < valid_to)
    as_of: datetime | None = None
    #: only the current truth: items whose valid_to is unset or still ahead (MemCube.search sets it)
    current: bool = False

    def __post_init__(self) -> None:
        self.user_id = _as_list(self.user_id, "user_id")
        self.agent_id = _as_list(self.agent_id, "agent_id")
        self.session_id = _as_list(self.session_id, "session_id")
        self.ids = _as_list(self.ids, "ids")
        self.tags_any = _as_list(self.tags_any, "tags_any")
        self.tags_all = _as_list(self.tags_all, "tags_all")
        try:
            self.kinds = None if self.kinds is None else [Kind(k) for k in _iter(self.kinds, "kinds")]
            self.states = None if self.states is None else [Lifecycle(s) for s in _iter(self.states, "states")]
        except ValueError as exc:
            raise InvalidFilterError(f"{exc}; kinds: {[k.value for k in Kind]}, states: {[s.value for s in Lifecycle]}") from None
        for bound in (self.time_from, self.time_to, self.as_of):
            if bound is not None and not isinstance(bound, datetime):
                raise InvalidFilterError(f"time_from / time_to must be datetimes, got {type(bound).__name__}")
            try:
                to_epoch(bound)
            except (OverflowError, ValueError):
                raise InvalidFilterError(f"time bound {bound!r} is outside the range of a timestamp") from None
        if self.time_from and self.time_to and to_epoch(self.time_from) > to_epoch(self.time_to):  # type: ignore[operator]
            raise InvalidFilterError("time_from is after time_to: the range is empty; swap them")
        budget = _Budget()
        budget.spend(len(self.tags_all or ()), len(self.tags_any or ()))
        if self.metadata is not None:
            _check_metadata(self.metadata, budget=budget)

    def to_sql(self, alias: str = "items") -> tuple[str, list[Any]]:
        """A SQL boolean expression over table ``alias`` and its parameters."""
        a = alias
        clauses: list[str] = []
        params: list[Any] = []

        def in_clause(column: str, values: Sequence[Any]) -> None:
            clauses.append(f"{a}.{column} IN ({','.join('?' * len(values))})")
            params.extend(values)

        for column in ("user_id", "agent_id", "session_id"):
            values = getattr(self, column)
            if values is not None:
                in_clause(column, values)
        if self.ids is not None:
            in_clause("id", self.ids)
        if self.kinds is not None:
            in_clause("kind", [k.value for k in self.kinds])  # type: ignore[union-attr]
        if self.states is not None:
            in_clause("state", [s.value for s in self.states])  # type: ignore[union-attr]
        if self.parent_id is not None:
            clauses.append(f"{a}.parent_id = ?")
            params.append(self.parent_id)
        if self.parent_prefix is not None:
            if not isinstance(self.parent_prefix, str):
                raise InvalidFilterError("parent_prefix must be a string")
            # [p, p + U+10FFFF): every string that starts with p, using the parent_id index
            clauses.append(f"({a}.parent_id >= ? AND {a}.parent_id < ?)")
            params.extend([self.parent_prefix, self.parent_prefix + "\U0010ffff"])
        if self.tags_any:
            clauses.append(
                f"EXISTS (SELECT 1 FROM json_each({a}.tags) WHERE value IN ({','.join('?' * len(self.tags_any))}))"
            )
            params.extend(self.tags_any)
        for tag in self.tags_all or ():
            clauses.append(f"EXISTS (SELECT 1 FROM json_each({a}.tags) WHERE value = ?)")
            params.append(tag)
        if self.time_from is not None:
            clauses.append(f"COALESCE({a}.event_time, {a}.created_at) >= ?")
            params.append(to_epoch(self.time_from))
        if self.time_to is not None:
            clauses.append(f"COALESCE({a}.event_time, {a}.created_at) <= ?")
            params.append(to_epoch(self.time_to))
        if self.as_of is not None or self.current:
            from ..storage.validity import validity_sql

            more, values = validity_sql(a, as_of=to_epoch(self.as_of), now=time.time() if self.current else None)
            clauses.extend(more)
            params.extend(values)
        for key, cond in (self.metadata or {}).items():
            sql, p = _boolean_sql(a, key, cond) if key in BOOLEAN_KEYS else _metadata_sql(a, key, cond)
            clauses.append(sql)
            params.extend(p)
        return (" AND ".join(clauses) or "1"), params

    def chroma_where(self, states: bool = True) -> dict[str, Any] | None:
        """The part of this filter Chroma can evaluate (scope, kind, state); the rest is checked in SQL.

        ``states=False`` leaves the lifecycle condition out (for a caller that checks it in SQL).
        """
        parts: list[dict[str, Any]] = []
        for column in ("user_id", "agent_id", "session_id"):
            values = getattr(self, column)
            if values is not None:
                parts.append({column: {"$in": list(values)}})
        if self.kinds is not None:
            parts.append({"kind": {"$in": [k.value for k in self.kinds]}})  # type: ignore[union-attr]
        if self.states is not None and states:
            parts.append({"state": {"$in": [s.value for s in self.states]}})  # type: ignore[union-attr]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else {"$and": parts}


def _iter(values: Any, name: str) -> Iterable[Any]:
    if isinstance(values, (str, Kind, Lifecycle)):
        return [values]
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise InvalidFilterError(f"{name} must be a list, got {type(values).__name__}")
    return values


def _check_metadata(metadata: Any, depth: int = 0, budget: _Budget | None = None) -> None:
    budget = budget or _Budget()
    if not isinstance(metadata, Mapping):
        raise InvalidFilterError("metadata filter must be a mapping of key -> value or {operator: value}")
    if depth > MAX_FILTER_DEPTH:  # SQLite's parser stack overflows near 30 nested $not
        raise InvalidFilterError(f"metadata filter is nested more than {MAX_FILTER_DEPTH} levels deep; flatten it")
    for key, cond in metadata.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, (list, tuple)) or not cond:
                raise InvalidFilterError(f"{key} needs a non-empty list of metadata mappings")
            for sub in cond:
                _check_metadata(sub, depth + 1, budget)
        elif key == "$not":
            if not isinstance(cond, Mapping) or not cond:
                raise InvalidFilterError("$not needs a non-empty metadata mapping")
            _check_metadata(cond, depth + 1, budget)
        else:
            _check_condition(key, cond, budget)


def _check_value(key: str, op: str, value: Any) -> None:
    """A value SQLite can bind: 64-bit integers, finite floats, UTF-8 strings."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int) and abs(value) > MAX_SQL_INT:
        raise InvalidFilterError(f"{op} for key {key!r}: integers must be within +-2**63 (SQLite's range)")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidFilterError(f"{op} for key {key!r}: {value!r} matches nothing; use a finite number")
    if isinstance(value, str):
        _utf8(value, f"{op} value for key {key!r}")


def _check_condition(key: Any, cond: Any, budget: _Budget) -> None:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidFilterError(
            f"metadata key {key!r} is not a plain name (letters, digits, '_', '-', '.'; at most 128 characters)"
        )
    if isinstance(cond, Mapping):
        if not cond:
            raise InvalidFilterError(f"empty condition for metadata key {key!r}")
        for op, value in cond.items():
            if op not in OPERATORS:
                raise InvalidFilterError(f"unknown operator {op!r} for key {key!r}; use one of {', '.join(OPERATORS)}")
            budget.spend(1)
            if op in ("$in", "$nin", "$any", "$all"):
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, Scalar) for v in value):
                    raise InvalidFilterError(f"{op} for key {key!r} needs a list of strings or numbers")
                budget.spend(max(len(value) - 1, 0) if op in ("$any", "$all") else 0, len(value))
                for v in value:
                    _check_value(key, op, v)
            elif op in ("$exists", "$is_empty"):
                if not isinstance(value, bool):
                    raise InvalidFilterError(f"{op} for key {key!r} needs true or false")
            elif op in ("$text_match", "$text_match_insensitive"):
                if not isinstance(value, str):
                    raise InvalidFilterError(f"{op} for key {key!r} needs a string")
            elif op == "$contains":
                if value is None or not isinstance(value, Scalar):
                    raise InvalidFilterError(f"$contains for key {key!r} needs a string or a number")
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                    raise InvalidFilterError(f"{op} for key {key!r} needs a number or a string")
            elif value is not None and not isinstance(value, Scalar):
                raise InvalidFilterError(f"{op} for key {key!r} needs a string, number, boolean or null")
            if not isinstance(value, (list, tuple)):
                _check_value(key, op, value)
    elif cond is not None and not isinstance(cond, Scalar):
        raise InvalidFilterError(
            f"metadata value for {key!r} must be a string, number, boolean or an {{operator: value}} mapping"
        )
    else:
        budget.spend(1)
        _check_value(key, "$eq", cond)


def _json_param(value: Any) -> Any:
    # json_extract returns SQLite integers 1/0 for JSON true/false
    return int(value) if isinstance(value, bool) else value


def _metadata_sql(alias: str, key: str, cond: Any) -> tuple[str, list[Any]]:
    path = "$." + ".".join(f'"{part}"' for part in key.split("."))
    expr = f"json_extract({alias}.metadata, ?)"
    if not isinstance(cond, Mapping):
        cond = {"$eq": cond}
    sqls: list[str] = []
    params: list[Any] = []
    for op, value in cond.items():
        if op in _EXTENDED:
            sql, p = _EXTENDED[op](alias, path, value)
            sqls.append(sql)
            params.extend(p)
        elif op == "$exists":
            sqls.append(f"(json_type({alias}.metadata, ?) IS {'NOT ' if value else ''}NULL)")
            params.append(path)
        elif op in ("$in", "$nin"):
            marks = ",".join("?" * len(value))  # SQLite: x IN () is false, x NOT IN () true
            neg = "NOT " if op == "$nin" else ""
            null_ok = f" OR {expr} IS NULL" if op == "$nin" else ""
            sqls.append(f"({expr} {neg}IN ({marks}){null_ok})")
            params.extend([path, *map(_json_param, value)] + ([path] if null_ok else []))
        elif value is None and op in ("$eq", "$ne"):
            sqls.append(f"({expr} IS {'NOT ' if op == '$ne' else ''}NULL)")
            params.append(path)
        elif op == "$ne":
            sqls.append(f"({expr} IS NULL OR {expr} != ?)")
            params.extend([path, path, _json_param(value)])
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            # compare like with like: SQLite orders every TEXT above every number
            types = "('text')" if isinstance(value, str) else "('integer', 'real')"
            sqls.append(f"(json_type({alias}.metadata, ?) IN {types} AND {expr} {_SQL_OPS[op]} ?)")
            params.extend([path, path, _json_param(value)])
        else:
            sqls.append(f"({expr} {_SQL_OPS[op]} ?)")
            params.extend([path, _json_param(value)])
    return " AND ".join(sqls), params


# -- the extended operators and boolean composition ------------------------------------------------
# Each returns a two-valued SQL expression (never NULL) over the JSON value at ``path``.

def _contains_sql(alias: str, path: str, value: Any) -> tuple[str, list[Any]]:
    """An array holding ``value``, or (for a string ``value``) a string holding it as a substring."""
    m = f"{alias}.metadata"
    array = f"(json_type({m}, ?) = 'array' AND EXISTS (SELECT 1 FROM json_each({m}, ?) WHERE value = ?))"
    if isinstance(value, str):
        return (f"({array} OR (json_type({m}, ?) = 'text' AND instr(json_extract({m}, ?), ?) > 0))",
                [path, path, value, path, path, value])
    return array, [path, path, _json_param(value)]


def _any_sql(alias: str, path: str, values: Any) -> tuple[str, list[Any]]:
    parts = [_contains_sql(alias, path, v) for v in values]
    return "(" + (" OR ".join(p for p, _ in parts) or "0") + ")", [x for _, ps in parts for x in ps]


def _all_sql(alias: str, path: str, values: Any) -> tuple[str, list[Any]]:
    # an empty list holds for any array or string, as Python's all([]) does, but not for a missing key
    parts = [(f"json_type({alias}.metadata, ?) IN ('array', 'text')", [path])]
    parts += [_contains_sql(alias, path, v) for v in values]
    return "(" + " AND ".join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]


def _text_match_sql(alias: str, path: str, value: Any) -> tuple[str, list[Any]]:
    m = f"{alias}.metadata"  # instr is case-sensitive (LIKE is not)
    return f"(json_type({m}, ?) = 'text' AND instr(json_extract({m}, ?), ?) > 0)", [path, path, value]


def _text_match_insensitive_sql(alias: str, path: str, value: Any) -> tuple[str, list[Any]]:
    # SQLite's lower() folds ASCII only: non-ASCII capitals in stored values are compared as written
    m = f"{alias}.metadata"
    return f"(json_type({m}, ?) = 'text' AND instr(lower(json_extract({m}, ?)), lower(?)) > 0)", [path, path, value]


def _is_empty_sql(alias: str, path: str, value: Any) -> tuple[str, list[Any]]:
    m = f"{alias}.metadata"
    empty = (f"(COALESCE(json_type({m}, ?), 'null') = 'null' OR json_extract({m}, ?) = '' "
             f"OR (json_type({m}, ?) = 'array' AND json_array_length({m}, ?) = 0))")
    return (empty if value else f"(NOT {empty})"), [path, path, path, path]


_EXTENDED = {
    "$contains": _contains_sql,
    "$any": _any_sql,
    "$all": _all_sql,
    "$text_match": _text_match_sql,
    "$text_match_insensitive": _text_match_insensitive_sql,
    "$is_empty": _is_empty_sql,
}


def _tree_sql(alias: str, metadata: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """AND of a mapping's conditions, each leaf forced to 0/1 so that NOT is exact."""
    sqls: list[str] = []
    params: list[Any] = []
    for key, cond in metadata.items():
        if key in BOOLEAN_KEYS:
            sql, p = _boolean_sql(alias, key, cond)
        else:
            sql, p = _metadata_sql(alias, key, cond)
            sql = f"COALESCE({sql}, 0)"
        sqls.append(sql)
        params.extend(p)
    return "(" + (" AND ".join(sqls) or "1") + ")", params


def _boolean_sql(alias: str, key: str, cond: Any) -> tuple[str, list[Any]]:
    if key == "$not":
        sql, params = _tree_sql(alias, cond)
        return f"(NOT {sql})", params
    parts = [_tree_sql(alias, sub) for sub in cond]
    joiner = " AND " if key == "$and" else " OR "
    return "(" + joiner.join(p for p, _ in parts) + ")", [x for _, ps in parts for x in ps]
