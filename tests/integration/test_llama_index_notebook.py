"""notebooks/llama_index_rag.ipynb runs top to bottom, offline (stand-in LLM where none is configured)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("llama_index.core")

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "llama_index_rag.ipynb"


def test_notebook_runs_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the labelled stand-in, never a network call
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "StandInLLM" in text and "[stand-in LLM, not a model]" in text
    assert "same answer after reopening" in text and "('Alice', 'WORKS_AT', 'Acme')" in text
    assert "Miso" in text and "StructuredQueryUnsupportedError" in text
    assert os.environ.get("OPENAI_API_KEY") is None
