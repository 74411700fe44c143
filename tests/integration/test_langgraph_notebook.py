"""notebooks/langgraph_memory.ipynb runs top to bottom, offline, with its labelled stand-in chat model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]


def test_notebook_executes_offline(tmp_path: Path) -> None:
    nb = nbformat.read(ROOT / "notebooks" / "langgraph_memory.ipynb", as_version=4)
    # the kernel is this interpreter (the project's venv), started offline from a scratch directory
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "PYTHONPATH": str(ROOT)}
    from jupyter_client.kernelspec import KernelSpec

    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.kernel_manager_class  # noqa: B018 - resolved lazily below
    km = client.create_kernel_manager()
    km._kernel_spec = KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                 display_name="venv", language="python", env=env)
    client.km = km
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "[stand-in model]" in outputs and "gluten" in outputs
