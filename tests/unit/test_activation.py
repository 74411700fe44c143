"""Activation memory: reused, forked, spilled and reloaded caches give the logits of a full recompute."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from memos_integrations.activation import (  # noqa: E402
    ActivationMemory,
    common_prefix,
    kv,  # noqa: E402
)
from memos_integrations.errors import (  # noqa: E402
    CubeCorruptedError,
    InvalidInputError,
    ItemNotFoundError,
    ModelMismatchError,
)
from memos_integrations.models.testing import tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see tests/conftest.py

ATOL = 1e-4


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request: pytest.FixtureRequest) -> Any:
    return tiny_causal_lm(request.param)


def full_logits(model: Any, ids: list[int]) -> Any:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def turn(mem: ActivationMemory, model: Any, thread: str, ids: list[int]) -> tuple[Any, int, str]:
    """One turn: reuse what the manager offers, prefill the rest, store; returns tail logits."""
    lease = mem.lookup(model, thread, ids)
    cache = lease.cache if lease.cache is not None else kv.new_cache(model.config)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids[lease.reused_tokens:]]), cache=cache, use_cache=True)
    mem.store(model, thread, ids, out.cache)
    return out.logits[0], lease.reused_tokens, lease.source


def rand_ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(0, 256) for _ in range(n)]


def test_multi_turn_threads_and_edited_history_match_full_recompute(model: Any) -> None:
    rng = random.Random(0)
    mem = ActivationMemory()
    threads = {"a": rand_ids(rng, 20), "b": rand_ids(rng, 15)}
    for step in range(4):
        for tid in threads:
            if step == 2 and tid == "a":
                threads[tid][5] = (threads[tid][5] + 1) % 256  # an edited earlier message
            threads[tid] = threads[tid] + rand_ids(rng, 7)
            ids = threads[tid]
            logits, reused, source = turn(mem, model, tid, ids)
            ref = full_logits(model, ids)[reused:]
            assert torch.allclose(logits, ref, atol=ATOL), (step, tid)
            if step == 0:
                assert source == "miss"
            elif step == 2 and tid == "a":
                assert reused == 5  # reuse stops at the edit, never past it
            else:
                assert reused == len(ids) - 7 and source == "memory"
    assert mem.stats.hits == 6 and mem.stats.misses == 2


def test_stored_cache_is_never_mutated_by_a_forward_on_its_fork(model: Any) -> None:
    mem = ActivationMemory()
    ids = list(range(30))
    turn(mem, model, "t", ids)
    _, stored = mem.load(model, "t")
    before = [layer.keys.clone() for layer in stored.layers]
    for _ in range(3):  # three divergent continuations of the same cached prefix
        lease = mem.lookup(model, "t", ids + [7, 8, 9])
        assert lease.reused_tokens == 30
        with torch.no_grad():
            model(input_ids=torch.tensor([[7, 8, 9]]), cache=lease.cache, use_cache=True)
        assert kv.seq_len(lease.cache) == 33
    token_ids, again = mem.load(model, "t")
    assert token_ids == ids and kv.seq_len(again) == 30
    assert all(torch.equal(b, layer.keys) for b, layer in zip(before, again.layers, strict=True))


def test_a_cache_covering_the_whole_prompt_leaves_one_token_to_feed(model: Any) -> None:
    mem = ActivationMemory()
    ids = list(range(12))
    turn(mem, model, "t", ids)
    logits, reused, _ = turn(mem, model, "t", ids)  # the very same prompt again
    assert reused == 11
    assert torch.allclose(logits, full_logits(model, ids)[11:], atol=ATOL)


def test_shared_prefix_is_forked_into_new_threads_and_invalidated_on_change(model: Any) -> None:
    mem = ActivationMemory()
    prefix = list(range(40, 80))
    assert mem.set_prefix(model, prefix, name="user:alice") is True
    assert mem.set_prefix(model, prefix, name="user:alice") is False  # unchanged: no work
    for tid, tail in [("t1", [1, 2, 3]), ("t2", [9, 8])]:
        logits, reused, source = turn(mem, model, tid, prefix + tail)
        assert (reused, source) == (40, "prefix")
        assert torch.allclose(logits, full_logits(model, prefix + tail)[40:], atol=ATOL)
    changed = prefix[:30] + [5] * 10  # a pinned memory changed
    assert mem.set_prefix(model, changed, name="user:alice") is True
    logits, reused, source = turn(mem, model, "t3", changed + [4])
    assert (reused, source) == (40, "prefix")
    assert torch.allclose(logits, full_logits(model, changed + [4])[40:], atol=ATOL)
    assert mem.invalidate_prefix("user:alice") == 1
    assert mem.lookup(model, "t4", changed + [4]).source == "miss"


def test_lru_budget_spills_to_disk_and_reloads(model: Any, tmp_path: Path) -> None:
    probe = ActivationMemory()
    turn(probe, model, "x", list(range(20)))
    one = probe.resident_bytes
    mem = ActivationMemory(tmp_path / "kv", budget_bytes=int(one * 2.5))
    rng = random.Random(1)
    prompts = {t: rand_ids(rng, 20) for t in ["a", "b", "c", "d"]}
    for t, ids in prompts.items():
        turn(mem, model, t, ids)
    assert mem.resident_bytes <= mem.budget_bytes and mem.stats.spills == 2  # a and b went to disk
    ids = prompts["a"] + [1, 2]
    logits, reused, source = turn(mem, model, "a", ids)
    assert (reused, source) == (20, "disk")
    assert torch.allclose(logits, full_logits(model, ids)[20:], atol=ATOL)
    assert sorted(mem.threads()) == ["a", "b", "c", "d"]


def test_budget_smaller_than_one_cache_goes_straight_to_disk(model: Any, tmp_path: Path) -> None:
    mem = ActivationMemory(tmp_path / "kv", budget_bytes=1)
    turn(mem, model, "t", list(range(16)))
    assert mem.resident_bytes == 0 and mem.stats.spills == 1
    logits, reused, source = turn(mem, model, "t", list(range(18)))
    assert (reused, source) == (16, "disk")
    assert torch.allclose(logits, full_logits(model, list(range(18)))[16:], atol=ATOL)
    no_disk = ActivationMemory(budget_bytes=1)
    turn(no_disk, model, "t", list(range(16)))
    assert no_disk.lookup(model, "t", list(range(18))).source == "miss"  # a clean recompute
    with pytest.raises(InvalidInputError):
        ActivationMemory(budget_bytes=0)


def test_disk_budget_deletes_the_oldest_spilled_caches(model: Any, tmp_path: Path) -> None:
    probe = ActivationMemory(tmp_path / "probe", budget_bytes=1)
    turn(probe, model, "x", list(range(20)))
    on_disk = probe.disk.entries()[0].nbytes  # type: ignore[union-attr]
    mem = ActivationMemory(tmp_path / "kv", budget_bytes=1, disk_budget_bytes=int(on_disk * 2.5))
    rng = random.Random(2)
    for t in ["a", "b", "c", "d"]:
        turn(mem, model, t, rand_ids(rng, 20))  # each goes straight to disk (RAM budget of 1 byte)
    kept = sorted(e.thread_id for e in mem.disk.entries())  # type: ignore[union-attr]
    assert kept == ["c", "d"]                                     # the two oldest were deleted
    assert len(list((tmp_path / "kv").glob("*.safetensors"))) == 2  # files, not only index rows
    assert mem.lookup(model, "a", list(range(5))).source == "miss"  # a clean recompute, no error
    with pytest.raises(InvalidInputError):
        ActivationMemory(tmp_path / "kv2", disk_budget_bytes=0)


def test_reopened_manager_serves_the_flushed_cache(model: Any, tmp_path: Path) -> None:
    mem = ActivationMemory(tmp_path / "kv")
    ids = list(range(100, 130))
    turn(mem, model, "t", ids)
    assert mem.flush() == 1
    fresh = ActivationMemory(tmp_path / "kv")
    logits, reused, source = turn(fresh, model, "t", ids + [1])
    assert (reused, source) == (30, "disk")
    assert torch.allclose(logits, full_logits(model, ids + [1])[30:], atol=ATOL)
    row = fresh.disk.find(ActivationMemory.model_key(model), "t")  # type: ignore[union-attr]
    header = fresh.disk.header(row)  # type: ignore[union-attr, arg-type]
    assert header["memos.model_key"] == ActivationMemory.model_key(model) and header["memos.dtype"] == "float32"


def test_foreign_model_and_dtype_caches_are_refused(tmp_path: Path) -> None:
    model = tiny_causal_lm("llama", seed=0)
    mem = ActivationMemory(tmp_path / "kv")
    turn(mem, model, "t", list(range(20)))
    mem.flush()
    other = tiny_causal_lm("llama", seed=1)  # same config, other weights
    reopened = ActivationMemory(tmp_path / "kv")
    lease = reopened.lookup(other, "t", list(range(21)))
    assert lease.source == "miss" and "another model" in lease.reason
    with pytest.raises(ModelMismatchError):
        reopened.load(other, "t")
    half = tiny_causal_lm("llama", seed=0, dtype=torch.bfloat16)
    with pytest.raises(ModelMismatchError):
        reopened.load(half, "t")
    # A file tampered to claim it belongs to this model is caught by the layout check.
    row = reopened.disk.find(ActivationMemory.model_key(model), "t")  # type: ignore[union-attr]
    with pytest.raises(ModelMismatchError):
        reopened.disk.read(row, model_key=ActivationMemory.model_key(other), dtype="float32")  # type: ignore[union-attr, arg-type]
    gpt = tiny_causal_lm("gpt2")
    tensors = kv.to_tensors(mem.load(model, "t")[1])
    with pytest.raises(ModelMismatchError):
        kv.from_tensors(tensors, gpt.config, n_tokens=20, dtype=torch.float32, device="cpu")


def test_corrupted_cache_file_is_a_clean_recompute_or_a_clear_error(tmp_path: Path) -> None:
    model = tiny_causal_lm("llama")
    mem = ActivationMemory(tmp_path / "kv")
    turn(mem, model, "t", list(range(20)))
    mem.flush()
    (file,) = (tmp_path / "kv").glob("*.safetensors")
    data = bytearray(file.read_bytes())
    data[-10] ^= 0xFF
    file.write_bytes(bytes(data))
    strict = ActivationMemory(tmp_path / "kv")
    with pytest.raises(CubeCorruptedError):
        strict.load(model, "t")
    lenient = ActivationMemory(tmp_path / "kv")
    logits, reused, source = turn(lenient, model, "t", list(range(22)))
    assert (reused, source) == (0, "miss") and lenient.stats.refused == 1
    assert torch.allclose(logits, full_logits(model, list(range(22))), atol=ATOL)
    (tmp_path / "kv" / "index.json").write_text("{not json")
    broken = ActivationMemory(tmp_path / "kv")
    assert broken.lookup(model, "t", list(range(5))).source == "miss"
    with pytest.raises(CubeCorruptedError):
        broken.load(model, "t")


def test_unknown_threads_and_bad_arguments(model: Any) -> None:
    mem = ActivationMemory()
    assert mem.lookup(model, "never-seen", [1, 2, 3]).source == "miss"
    with pytest.raises(ItemNotFoundError):
        mem.load(model, "never-seen")
    assert mem.drop("never-seen") == 0
    with pytest.raises(InvalidInputError):
        mem.lookup(model, "", [1, 2])
    with torch.no_grad():
        cache = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True).cache
    with pytest.raises(InvalidInputError):
        mem.store(model, "t", [1, 2, 3, 4], cache)  # more ids than the cache covers
    with pytest.raises(InvalidInputError):
        mem.set_prefix(model, [])


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_missing_local_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from memos_integrations.errors import MissingExtraError
    from memos_integrations.models import LocalRuntime
    from memos_integrations.parametric import ParametricMemory

    monkeypatch.setitem(__import__("sys").modules, "peft", None)  # as if the extra were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'memos-integrations\[local\]'"):
        ParametricMemory().bind(object(), object())
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"memos-integrations\[local\]"):
        LocalRuntime(object(), object())
