"""Moved: the vector index protocol is :mod:`memos_integrations.storage.base`, Chroma is
:mod:`memos_integrations.storage.chroma`. This module keeps the historical import path working."""

from __future__ import annotations

from ..storage.base import IndexRow, VectorFilter, VectorIndex
from ..storage.chroma import ChromaIndex

__all__ = ["ChromaIndex", "IndexRow", "VectorFilter", "VectorIndex"]
