"""Next-turn preloading (issue 12, item 5): how a turn uses its thread's prediction (hit, partial, miss),
on a tiny random model. A hit's block is a head of the predicted candidates that holds every memory
retrieval picked for the message, so only the message is prefilled and the logits equal a recompute
of exactly that prompt; a prediction made for another user or an edited thread is discarded."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from memos_integrations.activation.preload import Prediction  # noqa: E402
from memos_integrations.models import LocalRuntime  # noqa: E402
from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PREDICTED = {"a": "alpha memory", "b": "beta memory", "c": "gamma memory", "d": "delta memory"}


def decide(retrieved: list[str], budget: int | None = None) -> tuple[list[str], str]:
    rt = LocalRuntime(tiny_causal_lm(), byte_tokenizer(), preload=True, memory_token_budget=budget)
    job = Prediction("t", "u", "key", "basis", 1, list(PREDICTED), list(PREDICTED.values()), ready=True)
    texts = [PREDICTED.get(i, f"{i} memory") for i in retrieved]
    ids, out_texts, kind = rt._merge_prediction(job, list(retrieved), texts)
    assert out_texts == [PREDICTED.get(i, f"{i} memory") for i in ids]
    assert rt.preloader is not None
    rt.preloader.close()
    return ids, kind


@pytest.mark.parametrize(("retrieved", "budget", "block", "kind"), [
    (["b", "a"], None, ["a", "b"], "hit"),  # the shortest head that holds them, in prediction order
    (["c"], None, ["a", "b", "c"], "hit"),  # candidates ranked above a retrieved one stay (a prefix)
    ([], None, [], "hit"),  # nothing retrieved: no block, as today; only the message is prefilled
    (["b", "x"], None, ["a", "b", "x"], "partial"),  # the unpredicted one follows the head
    (["d", "x"], 18 + 3 * 15, ["a", "d", "x"], "partial"),  # a..d would not fit with x: a shorter head
    (["x", "y"], None, ["x", "y"], "miss"),  # nothing predicted: today's block
    (["d"], 18 + 15, ["d"], "miss"),  # no head fits with d: today's block
])
def test_a_turn_uses_the_head_of_the_prediction_that_holds_what_retrieval_picked(
        retrieved: list[str], budget: int | None, block: list[str], kind: str) -> None:
    # byte tokenizer: "Relevant memories:" is 18 tokens, "\n- alpha memory" 15
    assert decide(retrieved, budget) == (block, kind)


@pytest.fixture
def pets(cube: Any) -> Any:
    cube.add(memory=["Maya's dog Biscuit loves the beach.", "Biscuit the dog ate a sock in March.",
                     "Maya's dog Biscuit is scared of thunder.", "Maya works as a nurse in Porto."],
             user_id="maya")
    return cube


def test_a_hit_prefills_only_the_message_and_equals_a_recompute_of_todays_rendering(pets: Any) -> None:
    model = tiny_causal_lm("qwen2")
    rt = LocalRuntime(model, byte_tokenizer(), cube=pets, max_new_tokens=3, top_k=2, preload=True)
    chat = [{"role": "user", "content": "Tell me about my dog Biscuit"}]
    first = rt.generate(chat, thread_id="t", user_id="maya")
    chat += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "What about my dog?"}]
    assert rt.preloader is not None
    rt.preloader.wait(timeout=60)
    # no prediction after this turn: it would replace __preload__/t, which the end of this test reads
    rt.preloader.schedule = lambda *a, **k: None  # type: ignore[method-assign]
    gen = rt.generate(chat, thread_id="t", user_id="maya")
    assert gen.preload == "hit" and gen.cache_source == "preload"
    # every memory today's path picks for the message is in the block
    today_ids, _ = rt.retrieve("What about my dog?", "maya")
    assert set(today_ids) <= set(gen.memory_ids)
    # the prompt is today's rendering of that block, and only the message (and headers) was prefilled
    full, _, _ = rt.render(chat, user_id="maya", memories=[pets.get(i).text for i in gen.memory_ids])
    assert gen.prompt_ids == rt.encode(full)
    tail = len(rt.tokenizer("\n\nWhat about my dog?<|im_end|>\n<|im_start|>assistant\n")["input_ids"])
    assert gen.prompt_tokens - gen.reused_tokens <= tail
    # the same tokens and logits as a full recompute of that prompt
    with torch.no_grad():
        out = model.generate(torch.tensor([gen.prompt_ids]), max_new_tokens=3, do_sample=False)
        recomputed = model(input_ids=torch.tensor([gen.prompt_ids])).logits[0, -1]
    assert gen.token_ids == out[0, len(gen.prompt_ids):].tolist()[: len(gen.token_ids)]
    lease = rt.act_mem.lookup(model, "other", gen.prompt_ids, also=["__preload__/t"])
    assert lease.source == "preload" and lease.reused_tokens == gen.reused_tokens
    with torch.no_grad():
        reused = model(input_ids=torch.tensor([gen.prompt_ids[lease.reused_tokens:]]), cache=lease.cache).logits[0, -1]
    assert torch.allclose(reused, recomputed, atol=3e-5)
    rt.preloader.close()


def test_a_prediction_made_for_another_user_is_discarded(pets: Any) -> None:
    rt = LocalRuntime(tiny_causal_lm("qwen2"), byte_tokenizer(), cube=pets, max_new_tokens=2, top_k=2, preload=True)
    chat = [{"role": "user", "content": "Tell me about my dog Biscuit"}]
    first = rt.generate(chat, thread_id="t", user_id="maya")
    chat += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "What about my dog?"}]
    assert rt.preloader is not None
    rt.preloader.wait(timeout=60)
    gen = rt.generate(chat, thread_id="t", user_id="mallory")  # same thread id, another user
    assert gen.preload.startswith("discarded: the thread changed") and gen.memory_ids == []
    assert gen.cache_source != "preload" and "Relevant memories" not in rt.tokenizer.decode(gen.prompt_ids)
    rt.preloader.close()


def test_a_prediction_for_the_expected_message_gives_todays_exact_prompt(pets: Any) -> None:
    model = tiny_causal_lm("qwen2")
    rt = LocalRuntime(model, byte_tokenizer(), cube=pets, max_new_tokens=3, top_k=2, preload=True)
    plain = LocalRuntime(model, byte_tokenizer(), cube=pets, max_new_tokens=3, top_k=2)
    chat = [{"role": "user", "content": "Tell me about my dog Biscuit"}]
    chat.append({"role": "assistant", "content": rt.generate(chat, thread_id="t", user_id="maya").text})
    rt.preload_next(chat, thread_id="t", user_id="maya", query="Where does Maya work?")  # e.g. a suggested follow-up
    assert rt.preloader is not None
    rt.preloader.wait(timeout=60)
    chat.append({"role": "user", "content": "Where does Maya work?"})
    gen = rt.generate(chat, thread_id="t", user_id="maya")
    today = plain.generate(chat, user_id="maya")  # no preloading, no cache at all
    assert gen.preload == "hit" and gen.memory_ids == today.memory_ids
    assert gen.prompt_ids == today.prompt_ids and gen.token_ids == today.token_ids
    rt.preloader.close()
