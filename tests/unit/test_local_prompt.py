"""Prompt hygiene and next-turn preloading (issue 12, items 3 and 5) on a tiny random model: pinned
memories are not repeated, earlier turns' memory blocks do not pile up, the block keeps its token
budget, and a preloaded cache gives the logits of a full recompute, or is discarded."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from memos_integrations.activation.memory import PRELOAD_THREAD  # noqa: E402
from memos_integrations.models import LocalRuntime  # noqa: E402
from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PINNED = "Alice prefers short answers about her cat."


@pytest.fixture
def alice(cube: Any) -> Any:
    cube.add(memory=["Alice's cat is called Miso.", "Alice lives in Lisbon.", "Alice's cat eats tuna."],
             user_id="alice")
    cube.add(memory=[PINNED], user_id="alice", tags=["pinned"])
    return cube


def turns(rt: LocalRuntime, questions: list[str], thread: str = "t") -> tuple[list[Any], list[dict[str, str]]]:
    chat: list[dict[str, str]] = []
    gens = []
    for q in questions:
        chat.append({"role": "user", "content": q})
        gens.append(rt.generate(chat, thread_id=thread, user_id="alice"))
        chat.append({"role": "assistant", "content": gens[-1].text})
        if rt.preloader is not None:
            rt.preloader.wait(timeout=60)
    return gens, chat


def cached_text(rt: LocalRuntime, thread: str = "t") -> str:
    ids, _ = rt.act_mem.load(rt.model, thread)
    return str(rt.tokenizer.decode(ids))


def test_a_pinned_memory_is_not_repeated_in_the_retrieved_block(alice: Any) -> None:
    rt = LocalRuntime(tiny_causal_lm(), byte_tokenizer(), cube=alice, max_new_tokens=2, top_k=4)
    gen = rt.generate([{"role": "user", "content": "Tell me about my cat"}], thread_id="t", user_id="alice")
    text = cached_text(rt)
    assert text.count(PINNED) == 1 and "Relevant memories:" in text
    assert len(gen.memory_ids) == 3  # the other three, not the pinned one


def test_earlier_turns_memory_blocks_do_not_pile_up(alice: Any) -> None:
    questions = ["What is my cat called?", "Where do I live?", "What does my cat eat?", "Cat again?"]
    model = tiny_causal_lm()
    keep = LocalRuntime(model, byte_tokenizer(), cube=alice, max_new_tokens=3, top_k=2, turn_memories="keep")
    drop = LocalRuntime(model, byte_tokenizer(), cube=alice, max_new_tokens=3, top_k=2, turn_memories="drop")
    kept, _ = turns(keep, questions, "k")
    dropped, _ = turns(drop, questions, "d")
    assert cached_text(keep, "k").count("Relevant memories:") == 4
    assert cached_text(drop, "d").count("Relevant memories:") == 1
    saved = kept[-1].prompt_tokens - dropped[-1].prompt_tokens
    assert saved > 2 * 40  # three earlier blocks of two memories each (bytes: ~50 tokens a block)


def test_the_memory_block_keeps_its_token_budget(alice: Any) -> None:
    rt = LocalRuntime(tiny_causal_lm(), byte_tokenizer(), cube=alice, top_k=4, memory_token_budget=60)
    ids, texts = rt.retrieve("my cat", "alice", exclude=[PINNED])
    assert 1 <= len(ids) < 3
    block = "Relevant memories:" + "".join(f"\n- {t}" for t in texts)
    assert len(rt.tokenizer(block)["input_ids"]) <= 60


def test_a_preloaded_turn_prefills_only_the_message_and_equals_a_recompute(alice: Any) -> None:
    model = tiny_causal_lm("qwen2")
    rt = LocalRuntime(model, byte_tokenizer(), cube=alice, max_new_tokens=3, top_k=2, preload=True)
    gens, chat = turns(rt, ["What is my cat called?"])
    assert rt.preloader is not None and rt.preloader.stats.ready == 1
    message = "And what does she eat?"
    # the logits the preloaded cache gives equal a full recompute of the same prompt
    prediction = rt.preloader._predictions["t"]
    head = rt.encode_until_next_message(chat, user_id="alice", memories=prediction.memory_texts,
                                        pinned=rt.pinned_memories("alice"))
    full, _, _ = rt.render([*chat, {"role": "user", "content": message}], user_id="alice",
                           memories=prediction.memory_texts)
    ids = rt.encode(full)
    key = rt.act_mem.model_key(model)
    lease = rt.act_mem.lookup(model, "t", ids, model_key=key, also=[PRELOAD_THREAD + "t"])
    assert lease.source == "preload" and lease.reused_tokens >= len(head) - 2
    with torch.no_grad():
        reused = model(input_ids=torch.tensor([ids[lease.reused_tokens:]]), cache=lease.cache).logits[0, -1]
        recomputed = model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert torch.allclose(reused, recomputed, atol=3e-5)
    # the turn itself: a hit, served from the preloaded cache, the same tokens as with no reuse at all
    chat.append({"role": "user", "content": message})
    gen = rt.generate(chat, thread_id="t", user_id="alice")
    assert gen.preload == "hit" and gen.cache_source == "preload"
    tail = len(rt.tokenizer(message + "<|im_end|>\n<|im_start|>assistant\n")["input_ids"])
    assert gen.prompt_tokens - gen.reused_tokens <= tail + 2  # the message and the assistant header
    with torch.no_grad():  # the turn's own prompt (a head of the prediction: see test_preload_hits.py)
        out = model.generate(torch.tensor([gen.prompt_ids]), max_new_tokens=3, do_sample=False)
    assert gen.token_ids == out[0, len(gen.prompt_ids):].tolist()[: len(gen.token_ids)]


def test_a_prediction_for_an_edited_thread_is_discarded(alice: Any) -> None:
    model = tiny_causal_lm("qwen2")
    rt = LocalRuntime(model, byte_tokenizer(), cube=alice, max_new_tokens=3, top_k=2, preload=True)
    _, chat = turns(rt, ["What is my cat called?"])
    chat[0]["content"] = "What is my dog called?"  # the user edited the first message
    chat.append({"role": "user", "content": "And where do I live?"})
    gen = rt.generate(chat, thread_id="t", user_id="alice")
    assert gen.preload.startswith("discarded: the thread changed") and gen.cache_source != "preload"
    plain = LocalRuntime(model, byte_tokenizer(), cube=alice, max_new_tokens=3, top_k=2)
    assert plain.generate(chat, user_id="alice").token_ids == gen.token_ids
    assert rt.preloader is not None and rt.preloader.stats.discarded == 1
    rt.preloader.close()
