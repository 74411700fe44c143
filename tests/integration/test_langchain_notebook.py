"""notebooks/langchain_memory.ipynb runs top to bottom, offline, with its labelled stand-in chat model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]


def test_notebook_executes_offline(tmp_path: Path) -> None:
    nb = nbformat.read(ROOT / "notebooks" / "langchain_memory.ipynb", as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "MEMOS_CHAT_MODEL"}  # always the stand-in here
    env.update(HF_HUB_OFFLINE="1", ANONYMIZED_TELEMETRY="False", PYTHONPATH=str(ROOT))
    from jupyter_client.kernelspec import KernelSpec

    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    km = client.create_kernel_manager()
    # the kernel is this interpreter (the project's venv), not whatever "python3" is on PATH
    km._kernel_spec = KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                 display_name="venv", language="python", env=env)
    client.km = km
    client.execute()
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "[stand-in model]" in out
    assert "alice -> [stand-in model] From memory:" in out and "Miso" in out.split("alice ->")[1].split("\n")[0]
    bob_line = out.split("bob   ->")[1].split("\n")[0]
    assert "Miso" not in bob_line and "Alice" not in bob_line  # no cross-user recall
    assert "refused:" in out and "Lisbon" in out
