"""Moved: the graph protocol is :mod:`memos_integrations.storage.base`, the embedded graph
:mod:`memos_integrations.storage.graph`. This module keeps the historical imports (the relation
constants, ``GraphStore``, ``SQLiteGraph``) working."""

from __future__ import annotations

from ..storage.base import CypherUnsupportedError, GraphStore
from ..storage.graph import (
    BEFORE,
    CONFLICT,
    DERIVED_FROM,
    NEXT,
    PARENT,
    SAME_ENTITY,
    SUMMARIZED_BY,
    EmbeddedGraph,
    SQLiteGraph,
)

__all__ = ["BEFORE", "CONFLICT", "DERIVED_FROM", "NEXT", "PARENT", "SAME_ENTITY", "SUMMARIZED_BY", "CypherUnsupportedError", "EmbeddedGraph", "GraphStore", "SQLiteGraph"]
