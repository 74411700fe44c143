"""LlamaIndex ``MetadataFilters`` -> the cube's metadata filter vocabulary (textual/filters.py).

Where it sits: a pure translation used by the vector store, the graph store and the retriever; the
SQL is compiled by :class:`~memos_integrations.textual.filters.MemoryFilter`. Every operator and
condition LlamaIndex defines is supported, with nesting. Semantics follow ``SimpleVectorStore``
(the reference the tests compare against): a missing key matches only ``!=`` and ``nin``;
``contains`` / ``any`` / ``all`` test list members, or substrings of a string value. Where
``SimpleVectorStore`` raises ``TypeError`` (``text_match`` on a number), the condition is false.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.vector_stores.types import FilterCondition, FilterOperator, MetadataFilter, MetadataFilters

from ..errors import InvalidFilterError

_OPERATORS: dict[FilterOperator, str] = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.ANY: "$any",
    FilterOperator.ALL: "$all",
    FilterOperator.CONTAINS: "$contains",
    FilterOperator.TEXT_MATCH: "$text_match",
    FilterOperator.TEXT_MATCH_INSENSITIVE: "$text_match_insensitive",
    FilterOperator.IS_EMPTY: "$is_empty",
}


def _leaf(f: MetadataFilter) -> dict[str, Any]:
    try:
        op = _OPERATORS[FilterOperator(f.operator)]
    except (KeyError, ValueError):
        raise InvalidFilterError(
            f"filter operator {f.operator!r} on key {f.key!r} is not supported; use one of "
            f"{[o.value for o in _OPERATORS]}"
        ) from None
    if op == "$is_empty":
        return {f.key: {"$is_empty": True}}
    if f.value is None:
        raise InvalidFilterError(
            f"filter on key {f.key!r} compares with None; use FilterOperator.IS_EMPTY to find missing or empty values"
        )
    if op in ("$in", "$nin", "$any", "$all") and not isinstance(f.value, list):
        raise InvalidFilterError(f"operator {f.operator.value!r} on key {f.key!r} needs a list value, got {f.value!r}")
    return {f.key: {op: f.value}}


def to_memory_metadata(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """The metadata mapping for ``MemoryFilter(metadata=...)``, or None for no filter.

    Example:
        >>> from llama_index.core.vector_stores import MetadataFilters, MetadataFilter, FilterCondition
        >>> to_memory_metadata(MetadataFilters(filters=[MetadataFilter(key="year", value=2020, operator=">")],
        ...                                    condition=FilterCondition.NOT))
        {'$not': {'$or': [{'year': {'$gt': 2020}}]}}
    """
    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        raise InvalidFilterError(f"filters must be llama_index MetadataFilters, got {type(filters).__name__}")
    if not filters.filters:
        return None
    parts: list[dict[str, Any]] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = to_memory_metadata(f)
            if sub is not None:  # an empty group constrains nothing
                parts.append(sub)
        elif isinstance(f, MetadataFilter):
            parts.append(_leaf(f))
        else:
            raise InvalidFilterError(f"unsupported filter {f!r}; use MetadataFilter or MetadataFilters")
    if not parts:
        return None
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.NOT:  # LlamaIndex: none of the filters match
        return {"$not": {"$or": parts}}
    if len(parts) == 1:
        return parts[0]
    return {"$and" if condition == FilterCondition.AND else "$or": parts}


def combine(*parts: dict[str, Any] | None) -> dict[str, Any] | None:
    """AND of metadata mappings, skipping the empty ones."""
    present = [p for p in parts if p]
    if not present:
        return None
    return present[0] if len(present) == 1 else {"$and": present}
