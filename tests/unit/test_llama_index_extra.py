"""Importing the face without llama-index-core names the extra to install."""

from __future__ import annotations

import importlib
import sys

import pytest

from memos_integrations.errors import MissingExtraError


def test_missing_llama_index_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "memos_integrations.llama_index" or m.startswith("memos_integrations.llama_index.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "llama_index.core", None)  # None in sys.modules: import fails
    with pytest.raises(MissingExtraError, match=r"pip install 'memos-integrations\[llama-index\]'"):
        importlib.import_module("memos_integrations.llama_index")
    with pytest.raises(ImportError):  # and it is still an ImportError for callers who catch that
        importlib.import_module("memos_integrations.llama_index")
