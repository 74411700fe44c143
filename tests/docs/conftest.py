"""Fixtures for tests/docs: a tiny local checkpoint, and no state leaking between doc blocks."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Llama + byte tokenizer saved with ``save_pretrained``: the stand-in for a
    real local checkpoint (see doc_blocks.SUBSTITUTIONS)."""
    pytest.importorskip("torch")
    from memos_integrations.models.testing import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(autouse=True)
def _isolated_globals() -> Iterator[None]:
    """Blocks set process-wide state the way real programs do (``Settings.embed_model = ...``); put it
    back afterwards, and drop the checkpoints ``MemOSChatModel(model=...)`` loaded for a block's cube."""
    try:
        from llama_index.core import Settings
    except ImportError:
        Settings = None  # noqa: N806
    saved = dict(vars(Settings)) if Settings is not None else {}
    yield
    if Settings is not None:
        vars(Settings).update(saved)
    chat_model = sys.modules.get("memos_integrations.langchain.chat_model")
    if chat_model is None:
        return
    with chat_model._RUNTIMES_LOCK:  # a module cache keyed by the cube: it would keep each block's cube alive
        chat_model._RUNTIMES.clear()
