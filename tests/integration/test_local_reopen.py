"""A cube reopened in a new process serves the same KV cache and the same adapter.

The parent process runs a turn, distills an adapter and flushes the caches; a child process opens
the cube from its directory (real ``MemCube.open``, real ``from_pretrained`` of the checkpoint) and
reports what it got. The parent checks the child reused the cache from disk and produced exactly
what a full recompute produces, and that the adapter it routed has the same weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from memos_integrations.models import LocalRuntime  # noqa: E402
from memos_integrations.models.testing import save_tiny_checkpoint  # noqa: E402
from memos_integrations.parametric import DistillConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see tests/conftest.py

ROOT = Path(__file__).resolve().parents[2]
TURN1 = [{"role": "user", "content": "Remember: my locker code is 4711."}]
TURN2 = TURN1 + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "What is my code?"}]
PROBE = ["My locker code is 4711."]

CHILD = textwrap.dedent("""
    import json, sys
    from memos_integrations import MemCube
    from memos_integrations.models import LocalRuntime
    from memos_integrations.textual.embed import MiniLMEmbedder
    cube = MemCube.open(sys.argv[1], embedder=MiniLMEmbedder())
    rt = LocalRuntime.from_pretrained(sys.argv[2], cube=cube, max_new_tokens=5, top_k=0)
    turn2 = json.loads(sys.argv[3])
    gen = rt.generate(turn2, thread_id="locker", user_id="erin")
    para = cube.para_mem
    name = para.adapter_for("erin")
    print(json.dumps({"source": gen.cache_source, "reused": gen.reused_tokens, "tokens": gen.token_ids,
                      "adapter": gen.adapter, "sha": para.manifest(name).weights_sha256,
                      "loss": para.loss(json.loads(sys.argv[4]), adapter=name)}))
""")


def test_reopened_cube_in_a_new_process_serves_same_cache_and_adapter(cube: Any, tmp_path: Path) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", "llama", seed=3)
    runtime = LocalRuntime.from_pretrained(ckpt, cube=cube, max_new_tokens=5, top_k=0)
    cube.add(memory=PROBE, user_id="erin")
    manifest = cube.para_mem.distill("erin", config=DistillConfig(epochs=3), progress=False)
    first = runtime.generate(TURN1, thread_id="locker", user_id="erin")
    assert first.adapter == manifest.name
    cube.act_mem.flush()
    expected_loss = cube.para_mem.loss(PROBE, adapter=manifest.name)

    # What a full recompute of turn 2 gives (a fresh runtime on a fresh copy of the weights, no cache).
    from memos_integrations.activation import ActivationMemory
    from memos_integrations.parametric import ParametricMemory

    reference = LocalRuntime.from_pretrained(ckpt, cube=cube, act_mem=ActivationMemory(), max_new_tokens=5, top_k=0,
                                             para_mem=ParametricMemory(cube.path / "adapters"))
    ref = reference.generate(TURN2, thread_id="other", user_id="erin")
    assert ref.adapter == manifest.name

    cube.close()  # an embedded cube is held by one process at a time: hand it to the child
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(cube.path), str(ckpt), json.dumps(TURN2),
                          json.dumps(PROBE)], capture_output=True, text=True, env=env, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["source"] == "disk" and child["reused"] >= first.prompt_tokens
    assert child["tokens"] == ref.token_ids
    assert child["adapter"] == manifest.name and child["sha"] == manifest.weights_sha256
    assert child["loss"] == pytest.approx(expected_loss, abs=1e-5)
