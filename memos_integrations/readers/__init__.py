"""The LLM reader: typed memories, reconciliation with history, async ingestion, visible cost.

``from memos_integrations.readers import LLMReader, ReaderConfig``. Importing this package imports
no SDK: ``openai`` is imported when :meth:`LLMReader.from_openai` builds a client.
"""

from __future__ import annotations

from typing import Any

from .config import ReaderConfig

__all__ = ["AddResult", "LLMReader", "ReaderConfig", "Usage"]


def __getattr__(name: str) -> Any:
    if name == "LLMReader":
        from .reader import LLMReader

        return LLMReader
    if name == "AddResult":
        from .result import AddResult

        return AddResult
    if name == "Usage":
        from .llm import Usage

        return Usage
    raise AttributeError(name)
