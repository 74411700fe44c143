"""Search and listing filters: one typed, validated description of which items a query may return.

Data and validation only: each store compiles a filter in its own dialect
(:mod:`memos_integrations.storage.filter_sql`) and a vector index gets the neutral part of it
(:meth:`MemoryFilter.vector_filter`). Every value reaches SQL as a bound parameter; field names are
checked against a fixed table, metadata keys against a safe pattern.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import InvalidFilterError, InvalidInputError
from ..items import LIVE_STATES, MAX_SQL_INT, Kind, Lifecycle, check_utf8, to_epoch
from ..storage.base import VectorFilter

#: Operators a metadata condition may use (the LangGraph / Mongo-style vocabulary).
OPERATORS = (
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists",
    "$contains", "$any", "$all", "$text_match", "$text_match_insensitive", "$is_empty",
)
#: Keys that compose metadata conditions instead of naming a metadata field.
BOOLEAN_KEYS = ("$and", "$or", "$not")
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
        >>> f.vector_filter(states=False)
        VectorFilter(user_id=('caroline',), agent_id=None, session_id=None, kind=None, state=None)
        >>> MemoryFilter(metadata={"$not": {"year": {"$lt": 2000}}}).vector_filter(states=False) is None
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
        if self.parent_prefix is not None and not isinstance(self.parent_prefix, str):
            raise InvalidFilterError("parent_prefix must be a string")
        budget = _Budget()
        budget.spend(len(self.tags_all or ()), len(self.tags_any or ()))
        if self.metadata is not None:
            _check_metadata(self.metadata, budget=budget)

    def to_sql(self, alias: str = "items") -> tuple[str, list[Any]]:
        """This filter as SQLite SQL over table ``alias`` (a thin delegate kept for callers and tests;
        stores compile through their own dialect: :func:`memos_integrations.storage.filter_sql.compile_filter`)."""
        from ..storage.filter_sql import compile_filter

        return compile_filter(self, alias)

    def vector_filter(self, states: bool = True) -> VectorFilter | None:
        """The part of this filter a vector index evaluates itself (scope, kind, state); the rest is
        re-checked against the truth. ``states=False`` leaves the lifecycle condition out (for a caller
        that checks it in SQL). ``None`` when nothing narrows."""
        values = {c: tuple(getattr(self, c)) for c in ("user_id", "agent_id", "session_id") if getattr(self, c) is not None}
        if self.kinds is not None:
            values["kind"] = tuple(k.value for k in self.kinds)  # type: ignore[union-attr]
        if self.states is not None and states:
            values["state"] = tuple(s.value for s in self.states)  # type: ignore[union-attr]
        return VectorFilter(**values) if values else None


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
