"""Moved: the engine's store lives in :mod:`memos_integrations.storage` (``sqlstore.py``, ``sqlite.py``).

This module keeps the historical import path working (``from memos_integrations.textual.store import
SQLiteStore``).
"""

from __future__ import annotations

from ..storage.sqlite import SQLiteStore
from ..storage.sqlstore import SQLStore

__all__ = ["SQLStore", "SQLiteStore"]
