"""memos-integrations: MemOS-style memory cubes as drop-in memory for LangChain, LangGraph and LlamaIndex.

Importing this package imports no framework and no torch: the public names below load on first use.

    >>> from memos_integrations import MemCube, MOS
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "MemCube": "memos_integrations.cube",
    "MOS": "memos_integrations.mos",
    "CubeConfig": "memos_integrations.config",
    "neo4j_graph": "memos_integrations.config",
    "postgres_store": "memos_integrations.config",
    "MemoryItem": "memos_integrations.items",
    "SearchHit": "memos_integrations.items",
    "Kind": "memos_integrations.items",
    "Lifecycle": "memos_integrations.items",
    "Edge": "memos_integrations.items",
    "MemoryFilter": "memos_integrations.textual.filters",
    "SearchPlan": "memos_integrations.textual.retrieve",
    "MiniLMEmbedder": "memos_integrations.textual.embed",
    "MemScheduler": "memos_integrations.schedule",
}

__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .config import CubeConfig, neo4j_graph, postgres_store
    from .cube import MemCube
    from .items import Edge, Kind, Lifecycle, MemoryItem, SearchHit
    from .mos import MOS
    from .schedule import MemScheduler
    from .textual.embed import MiniLMEmbedder
    from .textual.filters import MemoryFilter
    from .textual.retrieve import SearchPlan


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'memos_integrations' has no attribute {name!r}")
