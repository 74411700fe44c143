"""Parametric memory: distillation, registry residency, mixed batches, hot swap, merges, bad input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from memos_integrations.errors import (  # noqa: E402
    CubeCorruptedError,
    InvalidInputError,
    ItemNotFoundError,
    ModelMismatchError,
)
from memos_integrations.models.fingerprint import model_dtype, model_fingerprint  # noqa: E402
from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm  # noqa: E402
from memos_integrations.parametric import AdapterManifest, DistillConfig, ParametricMemory  # noqa: E402
from memos_integrations.parametric.manifest import write_adapter  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see tests/conftest.py

MEMORIES = ["Alice's cat is called Miso and sleeps on the piano.",
            "Alice works as a glassblower in Murano.",
            "Alice is allergic to peanuts and hates cilantro."]
UNRELATED = ["The committee approved the budget for next year.",
             "Rain is expected over the northern hills tonight."]


@dataclass
class Item:  # the MemoryItem fields distill reads
    id: str
    version: int
    text: str


def random_adapter(pm: ParametricMemory, name: str, seed: int, rank: int = 4) -> AdapterManifest:
    """A non-trivial adapter without training: LoRA B initialised randomly too."""
    from peft import LoraConfig

    reg = pm.registry
    assert reg is not None
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False, task_type="CAUSAL_LM",
                     target_modules=["q_proj", "v_proj"])
    with reg.training_adapter(cfg, seed=seed):
        state, peft_config = reg.extract("_distill_")
        state = {k: v.detach().clone() * 3 for k, v in state.items()}
    manifest = AdapterManifest(name=name, base_fingerprint=reg.fingerprint, base_dtype=reg.dtype, kind="imported")
    write_adapter(pm.directory / name, state, peft_config, manifest)  # type: ignore[operator]
    return reg.register(pm.directory / name)  # type: ignore[operator]


@pytest.fixture
def pm(tmp_path: Path) -> ParametricMemory:
    mem = ParametricMemory(tmp_path / "adapters", max_resident=2)
    mem.bind(tiny_causal_lm("llama"), byte_tokenizer())
    return mem


def logits_alone(pm: ParametricMemory, ids: Any, adapter: str | None) -> Any:
    with torch.no_grad():
        if adapter is None:
            model = pm.model
            if getattr(model, "peft_config", None):
                with model.disable_adapter():
                    return model(input_ids=ids).logits
            return model(input_ids=ids).logits
        pm.activate(adapter)
        return pm.model(input_ids=ids).logits


def test_distill_learns_the_users_memories_and_little_else(pm: ParametricMemory, capsys: Any) -> None:
    before_mem, before_other = pm.loss(MEMORIES), pm.loss(UNRELATED)
    items = [Item(f"m{i}", i + 1, t) for i, t in enumerate(MEMORIES)]
    manifest = pm.distill("alice", memories=items,
                          config=DistillConfig(rank=16, epochs=40, learning_rate=2e-2), progress=True)
    assert "distill" in capsys.readouterr().err  # the tqdm progress bar
    after_mem, after_other = pm.loss(MEMORIES, adapter=manifest.name), pm.loss(UNRELATED, adapter=manifest.name)
    assert before_mem - after_mem > 0.3  # clearly learned
    assert abs(after_other - before_other) < 0.25 * (before_mem - after_mem)  # barely moved
    assert pm.loss(MEMORIES) == pytest.approx(before_mem, abs=1e-5)  # the base model is untouched
    assert manifest.memories == [{"id": "m0", "version": 1}, {"id": "m1", "version": 2}, {"id": "m2", "version": 3}]
    assert manifest.base_fingerprint == model_fingerprint(pm.model)
    assert len(manifest.loss_curve) == 40 and manifest.loss_curve[-1] < manifest.loss_curve[0]
    assert manifest.training["rank"] == 16
    on_disk = json.loads((pm.directory / manifest.name / "manifest.json").read_text())  # type: ignore[operator]
    assert on_disk["weights_sha256"] == manifest.weights_sha256
    assert pm.route("alice") is not None and pm.route("bob") is None


def test_residency_limit_evicts_least_recently_used(pm: ParametricMemory) -> None:
    names = [random_adapter(pm, f"ad{i}", seed=i).name for i in range(4)]
    reg = pm.registry
    assert reg is not None
    pm.activate(names[0])
    pm.activate(names[1])
    pm.activate(names[0])  # ad0 is now the most recent
    pm.activate(names[2])  # evicts ad1
    assert reg.resident == ["ad0", "ad2"] and len(reg.model.peft_config) == 2
    ids = torch.tensor([[5, 6, 7, 8]])
    again = logits_alone(pm, ids, "ad1")  # reloaded on demand, same weights
    fresh = ParametricMemory(pm.directory, max_resident=2)
    fresh.bind(tiny_causal_lm("llama"), byte_tokenizer())
    assert torch.allclose(again, logits_alone(fresh, ids, "ad1"), atol=1e-5)
    pm.unload("ad1")
    assert "ad1" not in reg.resident and "ad1" in pm.adapters()


def test_mixed_adapter_batch_rows_equal_each_adapter_alone(pm: ParametricMemory) -> None:
    random_adapter(pm, "red", seed=1)
    random_adapter(pm, "blue", seed=2)
    pm.assign("u-red", "red")
    pm.assign("u-blue", "blue")
    ids = torch.tensor([[10, 20, 30, 40, 50], [1, 2, 3, 4, 5], [7, 7, 7, 7, 7]])
    mask = torch.ones_like(ids)
    batch = pm.forward_batch(ids, mask, ["u-red", "u-blue", "nobody"])
    for row, adapter in enumerate(["red", "blue", None]):
        alone = logits_alone(pm, ids[row:row + 1], adapter)
        assert torch.allclose(batch[row], alone[0], atol=1e-5), adapter
    assert not torch.allclose(batch[0], logits_alone(pm, ids[0:1], None)[0], atol=1e-3)  # adapters matter


def test_hot_swap_replaces_weights_in_place(pm: ParametricMemory, tmp_path: Path) -> None:
    random_adapter(pm, "team", seed=1)
    ids = torch.tensor([[3, 1, 4, 1, 5]])
    old = logits_alone(pm, ids, "team")
    other = ParametricMemory(tmp_path / "other", max_resident=2)
    other.bind(pm.registry.base_model, byte_tokenizer())  # type: ignore[union-attr]
    random_adapter(other, "team", seed=7)
    pm.registry.hot_swap("team", tmp_path / "other" / "team")  # type: ignore[union-attr]
    swapped = logits_alone(pm, ids, "team")
    assert not torch.allclose(old, swapped, atol=1e-4)
    fresh = ParametricMemory(tmp_path / "other", max_resident=2)
    fresh.bind(tiny_causal_lm("llama"), byte_tokenizer())
    assert torch.allclose(swapped, logits_alone(fresh, ids, "team"), atol=1e-5)


def test_weighted_merge_is_the_weighted_sum_of_deltas(pm: ParametricMemory) -> None:
    random_adapter(pm, "a1", seed=1)
    random_adapter(pm, "a2", seed=2)
    manifest = pm.merge(["a1", "a2"], [0.7, 0.3], "teamx")
    assert [s["adapter"] for s in manifest.sources] == ["a1", "a2"] and manifest.kind == "merged"
    pm.registry.load("a1")  # type: ignore[union-attr]
    pm.registry.load("teamx")  # type: ignore[union-attr]
    pm.registry.max_resident = 3  # type: ignore[union-attr]
    pm.registry.load("a2")  # type: ignore[union-attr]
    layer = pm.model.base_model.model.model.layers[0].self_attn.q_proj
    want = 0.7 * layer.get_delta_weight("a1") + 0.3 * layer.get_delta_weight("a2")
    assert torch.allclose(layer.get_delta_weight("teamx"), want, atol=1e-5)
    pm.assign("carol", "teamx")
    assert pm.route("carol").name == "teamx"  # type: ignore[union-attr]


def test_bad_adapters_are_refused_with_clear_errors(pm: ParametricMemory, tmp_path: Path) -> None:
    random_adapter(pm, "good", seed=1)
    # another base model: refused at registration, listed by bind
    stranger = ParametricMemory(tmp_path / "stranger", max_resident=2)
    stranger.bind(tiny_causal_lm("llama", seed=5), byte_tokenizer())
    random_adapter(stranger, "foreign", seed=1)
    with pytest.raises(ModelMismatchError):
        pm.registry.register(tmp_path / "stranger" / "foreign")  # type: ignore[union-attr]
    # corrupted weights
    weights = pm.directory / "good" / "adapter_model.safetensors"  # type: ignore[operator]
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")
    with pytest.raises(CubeCorruptedError):
        pm.registry.register(pm.directory / "good")  # type: ignore[union-attr, operator]
    rebound = ParametricMemory(pm.directory, max_resident=2)
    rebound.bind(tiny_causal_lm("llama"), byte_tokenizer())
    assert "good" in rebound.refused and rebound.adapters() == []
    # pickled weights are never loaded
    weights.rename(weights.with_name("adapter_model.bin"))
    with pytest.raises(CubeCorruptedError, match="pickled"):
        pm.registry.register(pm.directory / "good")  # type: ignore[union-attr, operator]
    # a dtype mismatch is a model mismatch
    half = ParametricMemory(tmp_path / "stranger", max_resident=2)
    half.bind(tiny_causal_lm("llama", seed=5, dtype=torch.bfloat16), byte_tokenizer())
    assert "foreign" in half.refused
    with pytest.raises(ItemNotFoundError):
        pm.activate("never-made")
    with pytest.raises(InvalidInputError):
        pm.distill("alice", texts=["  "], progress=False)
    with pytest.raises(InvalidInputError):
        pm.distill("alice", texts=["x"], name="../escape", progress=False)
    with pytest.raises(InvalidInputError):
        ParametricMemory(tmp_path / "x").distill("alice", texts=["x"])  # no model bound
    with pytest.raises(InvalidInputError):
        pm.merge(["good"], [1.0, 2.0], "bad")
    assert model_dtype(pm.model) == "float32"
