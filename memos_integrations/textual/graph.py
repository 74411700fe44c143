"""Moved: the graph protocol is :mod:`memos_integrations.storage.base`, the embedded graph
:mod:`memos_integrations.storage.graph`. This module keeps the historical imports (the relation
constants, ``GraphStore``, ``SQLiteGraph``) working."""

from __future__ import annotations

from ..storage.base import CypherUnsupportedError, GraphStore
from ..storage.graph import DERIVED_FROM, NEXT, PARENT, EmbeddedGraph, SQLiteGraph

__all__ = ["DERIVED_FROM", "NEXT", "PARENT", "CypherUnsupportedError", "EmbeddedGraph", "GraphStore", "SQLiteGraph"]
