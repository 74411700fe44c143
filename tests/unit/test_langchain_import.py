"""The LangChain face is an optional extra: a missing dependency says which extra to install."""

from __future__ import annotations

import importlib
import sys

import pytest

from memos_integrations.errors import MissingExtraError


def _forget_face(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unimport the face for one test; monkeypatch puts the original modules back afterwards."""
    import memos_integrations

    monkeypatch.delattr(memos_integrations, "langchain", raising=False)
    for name in list(sys.modules):
        if name == "memos_integrations.langchain" or name.startswith("memos_integrations.langchain."):
            monkeypatch.delitem(sys.modules, name)


def test_without_langchain_core_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _forget_face(monkeypatch)
    monkeypatch.setitem(sys.modules, "langchain_core", None)  # makes `import langchain_core` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'memos-integrations\[langchain\]'"):
        importlib.import_module("memos_integrations.langchain")


def test_without_the_langchain_package_only_the_middleware_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    _forget_face(monkeypatch)
    for name in [n for n in sys.modules if n == "langchain" or n.startswith("langchain.")] or ["langchain"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if only langchain-core were installed
    face = importlib.import_module("memos_integrations.langchain")
    assert face.MemOSVectorStore and face.MemOSRetriever and face.create_memory_tools
    with pytest.raises(MissingExtraError, match=r"memos-integrations\[langchain\]"):
        _ = face.MemOSMemoryMiddleware


def test_public_names_and_lazy_chat_model() -> None:
    face = importlib.import_module("memos_integrations.langchain")
    for name in face.__all__:
        if name == "MemOSChatModel":
            continue  # another module's (torch); it must fail with MissingExtraError, if at all
        assert getattr(face, name)
    try:
        _ = face.MemOSChatModel
    except MissingExtraError:
        pass
    with pytest.raises(AttributeError):
        _ = face.NoSuchThing
