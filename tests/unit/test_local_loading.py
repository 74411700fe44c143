"""Loading what users have (issue 12, item 1): folders with loader options, .gguf paths, loaded
models, the fingerprint of what computes, the current cache keyword, and bad input refused clearly.
Tiny random-weight checkpoints here; the real SmolLM2 GGUF is in tests/integration/test_local_smollm2.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from memos_integrations.errors import InvalidInputError, ModelLoadError, ModelNotFoundError  # noqa: E402
from memos_integrations.models import LocalRuntime  # noqa: E402
from memos_integrations.models.fingerprint import model_fingerprint  # noqa: E402
from memos_integrations.models.loading import convert_gguf, load_model  # noqa: E402
from memos_integrations.models.testing import byte_tokenizer, save_tiny_checkpoint, tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "llama")


def test_loader_options_pass_through_and_runtime_options_stay(ckpt: Path) -> None:
    rt = LocalRuntime.from_pretrained(ckpt, attn_implementation="eager", dtype=torch.float64, revision="main",
                                      max_new_tokens=3, top_k=0)
    assert rt.model.config._attn_implementation == "eager"
    assert rt.model.dtype == torch.float64
    assert rt.max_new_tokens == 3 and rt.top_k == 0
    assert len(rt.generate([{"role": "user", "content": "hi"}]).token_ids) <= 3


def test_fingerprint_ignores_loader_keys_but_not_weights(ckpt: Path) -> None:
    sdpa, _ = load_model(ckpt, attn_implementation="sdpa")
    eager, _ = load_model(ckpt, attn_implementation="eager")
    assert model_fingerprint(sdpa) == model_fingerprint(eager)
    # what a GGUF load or another save adds to the config is not the computation
    eager.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf"}
    eager.config.architectures = None
    eager.config.pad_token_id = 7
    assert model_fingerprint(eager, refresh=True) == model_fingerprint(sdpa)
    # what computes is
    eager.config.rms_norm_eps = 1e-3
    assert model_fingerprint(eager, refresh=True) != model_fingerprint(sdpa)
    assert model_fingerprint(tiny_causal_lm("llama", seed=1)) != model_fingerprint(sdpa)


def test_forward_calls_use_the_cache_keyword(cube: Any) -> None:
    """``past_key_values=`` is deprecated (removed in transformers 5.40): every call names ``cache=``."""
    model = tiny_causal_lm()
    seen: list[set[str]] = []
    forward = model.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(set(kwargs))
        return forward(*args, **kwargs)

    model.forward = spy  # an instance attribute: nn.Module.__call__ goes through it
    cube.add(memory=["Alice likes tea."], user_id="alice", tags=["pinned"])
    rt = LocalRuntime(model, byte_tokenizer(), cube=cube, max_new_tokens=3)
    rt.generate([{"role": "user", "content": "tea?"}], thread_id="t", user_id="alice")
    rt.generate([{"role": "user", "content": "tea?"}, {"role": "assistant", "content": "ok"},
                 {"role": "user", "content": "more"}], thread_id="t", user_id="alice")
    assert seen and all("cache" in k and "past_key_values" not in k for k in seen)


def test_a_gguf_path_is_split_into_folder_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00truncated")
    with pytest.raises(ModelLoadError, match="gguf/transformers cannot read it"):
        LocalRuntime.from_pretrained(bad)
    with pytest.raises(ModelLoadError, match="gguf/transformers cannot read it"):
        LocalRuntime.from_pretrained(tmp_path, gguf_file="model.gguf")


def test_a_gguf_of_an_unsupported_architecture_says_what_to_do(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "mamba9.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba9")
    writer.add_block_count(1)
    writer.add_tensor("x", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match="mamba9.*upgrade them, or convert"):
        LocalRuntime.from_pretrained(path)
    with pytest.raises(ModelLoadError):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_files_that_are_not_models_are_refused(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(bytes(range(256)) * 4)
    for path in (notes, junk):
        with pytest.raises(ModelLoadError, match="is not a model"):
            LocalRuntime.from_pretrained(path)
    with pytest.raises(ModelNotFoundError):
        LocalRuntime.from_pretrained(tmp_path / "missing")
    with pytest.raises(ModelNotFoundError):
        LocalRuntime.from_pretrained(tmp_path, gguf_file="missing.gguf")
    junk.unlink()
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="no config.json.*gguf_file='weights.gguf'"):
        LocalRuntime.from_pretrained(tmp_path)
    assert issubclass(ModelNotFoundError, FileNotFoundError) and issubclass(ModelLoadError, ValueError)


def test_chat_model_takes_a_path_options_or_a_loaded_model(ckpt: Path, cube: Any) -> None:
    from memos_integrations.langchain.chat_model import MemOSChatModel

    cfg: Any = {"configurable": {"user_id": "alice", "thread_id": "t"}}
    by_path = MemOSChatModel(model=ckpt, cube=cube, max_tokens=2, loader_kwargs={"attn_implementation": "eager"})
    assert by_path.get_runtime().model.config._attn_implementation == "eager"
    assert by_path.invoke("hi", config=cfg).usage_metadata is not None
    model, tok = load_model(ckpt)
    loaded = MemOSChatModel(model=model, tokenizer=tok, cube=cube, max_tokens=2)
    assert loaded.get_runtime().model is model and loaded.model_name == ""
    assert loaded.invoke("hi", config=cfg).response_metadata["memos"]["cache_source"]
    with pytest.raises(InvalidInputError, match="tokenizer"):
        MemOSChatModel(model=model, cube=cube).get_runtime()
    with pytest.raises(ModelNotFoundError):
        MemOSChatModel(model=ckpt / "nope.gguf", cube=cube).get_runtime()
