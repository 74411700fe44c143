"""Bi-temporal conditions on items: what was true at a time (``valid_from`` / ``valid_to``, epoch REAL).

A memory the LLM reader superseded keeps its text and gets ``valid_to`` (when it stopped being
true); search asks for the current truth (``valid_to`` unset or later than now) or for what was true
``as_of`` a time. An unset ``valid_from`` means "since it was recorded" (``created_at``).
"""

from __future__ import annotations

from typing import Any


def validity_sql(alias: str, *, as_of: float | None, now: float | None) -> tuple[list[str], list[Any]]:
    """SQL conditions (ANDed by the caller) for ``as_of`` and/or the current truth at ``now``."""
    clauses: list[str] = []
    params: list[Any] = []
    if as_of is not None:
        clauses.append(f"COALESCE({alias}.valid_from, {alias}.created_at) <= ? AND ({alias}.valid_to IS NULL OR {alias}.valid_to > ?)")
        params.extend([as_of, as_of])
    if now is not None:
        clauses.append(f"({alias}.valid_to IS NULL OR {alias}.valid_to > ?)")
        params.append(now)
    return clauses, params
