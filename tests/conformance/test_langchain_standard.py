"""langchain-tests' own suites against the LangChain face: vector store, retriever, memory tools.

The vector store and tools use the suite's ``DeterministicFakeEmbedding`` (fast, deterministic),
each test on a fresh real cube (SQLite + persistent Chroma); the retriever uses the real MiniLM.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    ToolsIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import ToolsUnitTests

from memos_integrations import MemCube
from memos_integrations.langchain import (
    ForgetMemoryTool,
    MemOSRetriever,
    MemOSVectorStore,
    SaveMemoryTool,
    SearchMemoryTool,
)


class TestMemOSVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Iterator[VectorStore]:  # type: ignore[override]
        cube = MemCube.init_from_dir(tmp_path / "cube", embedder=self.get_embeddings())
        try:
            yield MemOSVectorStore(cube, self.get_embeddings())
        finally:
            cube.close()


_shared: dict[str, Any] = {}


def _retrieval_cube() -> MemCube:
    """One small cube of one user's memories, built once for the retriever suite (read-only)."""
    if "cube" not in _shared:
        from memos_integrations.textual.embed import MiniLMEmbedder

        cube = MemCube.init_from_dir(Path(tempfile.mkdtemp(prefix="lc-retriever-")) / "cube", embedder=MiniLMEmbedder())
        cube.add(memory=[f"Alice's note {n}: she likes tea number {n}" for n in range(6)], user_id="alice")
        cube.add(memory=["Bob likes coffee"], user_id="bob")
        _shared["cube"] = cube
    return _shared["cube"]  # type: ignore[no-any-return]


class TestMemOSRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return MemOSRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"cube": _retrieval_cube(), "user_id": "alice"}

    @property
    def retriever_query_example(self) -> str:
        return "what tea does alice like?"


def _tool_cube() -> MemCube:
    if "tool_cube" not in _shared:
        from langchain_core.embeddings import DeterministicFakeEmbedding

        cube = MemCube.init_from_dir(
            Path(tempfile.mkdtemp(prefix="lc-tools-")) / "cube", embedder=DeterministicFakeEmbedding(size=16)
        )
        cube.add(memory="Alice drinks genmaicha", user_id="alice")
        _shared["tool_cube"] = cube
    return _shared["tool_cube"]  # type: ignore[no-any-return]


class _ToolParams:
    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"cube": _tool_cube(), "user_id": "alice"}


class TestSearchMemoryToolUnit(_ToolParams, ToolsUnitTests):
    tool_constructor = SearchMemoryTool
    tool_invoke_params_example = {"query": "tea", "k": 2}


class TestSearchMemoryToolIntegration(_ToolParams, ToolsIntegrationTests):
    tool_constructor = SearchMemoryTool
    tool_invoke_params_example = {"query": "tea", "k": 2}


class TestSaveMemoryToolUnit(_ToolParams, ToolsUnitTests):
    tool_constructor = SaveMemoryTool
    tool_invoke_params_example = {"text": "Alice is allergic to peanuts", "kind": "fact"}


class TestSaveMemoryToolIntegration(_ToolParams, ToolsIntegrationTests):
    tool_constructor = SaveMemoryTool
    tool_invoke_params_example = {"text": "Alice is allergic to peanuts", "kind": "fact"}


class TestForgetMemoryToolUnit(_ToolParams, ToolsUnitTests):
    tool_constructor = ForgetMemoryTool
    tool_invoke_params_example = {"memory_id": "no-such-memory"}


class TestForgetMemoryToolIntegration(_ToolParams, ToolsIntegrationTests):
    tool_constructor = ForgetMemoryTool
    tool_invoke_params_example = {"memory_id": "no-such-memory"}


def test_suites_saw_every_tool() -> None:
    """Guard: the three tools a toolkit hands out are the three classes tested above."""
    from memos_integrations.langchain import create_memory_tools

    tools: list[BaseTool] = create_memory_tools(_tool_cube(), "alice")
    assert [type(t) for t in tools] == [SearchMemoryTool, SaveMemoryTool, ForgetMemoryTool]
