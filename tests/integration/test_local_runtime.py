"""The local runtime and MemOSChatModel on a real cube: reuse is invisible in the output, memories
are retrieved and pinned, adapters route per user, and a LangGraph graph drives the thread id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from memos_integrations.models import LocalRuntime  # noqa: E402
from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm  # noqa: E402
from memos_integrations.parametric import DistillConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see tests/conftest.py

def chat_turns(runtime: LocalRuntime, thread: str | None, user: str, questions: list[str]) -> list[Any]:
    msgs: list[dict[str, str]] = []
    gens = []
    for q in questions:
        msgs.append({"role": "user", "content": q})
        gen = runtime.generate(msgs, thread_id=thread, user_id=user)
        gens.append(gen)
        msgs.append({"role": "assistant", "content": f"noted {len(gens)}"})  # a clean, re-tokenisable reply
    return gens


@pytest.mark.parametrize("turn_memories", ["keep", "drop"])
def test_reuse_changes_nothing_but_the_work(cube: Any, turn_memories: str) -> None:
    cube.add(memory=["Alice's cat is called Miso.", "Alice lives in Lisbon."], user_id="alice")
    cube.add(memory=["Alice prefers short answers."], user_id="alice", tags=["pinned"])
    model = tiny_causal_lm("qwen2")
    questions = ["What is my cat called?", "Where do I live?", "And my cat again?"]
    cached = LocalRuntime(model, byte_tokenizer(), cube=cube, max_new_tokens=6, turn_memories=turn_memories)
    with_cache = chat_turns(cached, "t1", "alice", questions)
    plain = LocalRuntime(model, byte_tokenizer(), cube=cube, max_new_tokens=6, act_mem=_NoReuse(),
                         turn_memories=turn_memories)
    without = chat_turns(plain, "t1", "alice", questions)  # same prompts, every turn recomputed
    assert [g.token_ids for g in with_cache] == [g.token_ids for g in without]
    assert with_cache[0].cache_source == "prefix"  # the pinned-memory prefix, forked into a new thread
    assert [g.cache_source for g in with_cache[1:]] == ["memory", "memory"]
    prefix = len(cached.encode([{"role": "system", "content": cached.system_text("alice")}], generation_prompt=False))
    for prev, gen in zip(with_cache, with_cache[1:], strict=False):
        if turn_memories == "keep":
            # the whole previous prompt (with the memories that turn saw) is reused; the replies here
            # are not the generated text, so reuse stops where the reply starts
            assert gen.reused_tokens >= prev.prompt_tokens
        else:
            # the previous turn's memory block is dropped: reuse stops where it began
            assert prefix < gen.reused_tokens < prev.prompt_tokens
    assert with_cache[0].memory_ids  # memories were retrieved for the turn
    assert "Alice prefers short answers." in cached.system_text("alice")
    hot = LocalRuntime(model, byte_tokenizer(), prefix_memories=lambda user: [f"{user} was here"])
    assert "alice was here" in hot.system_text("alice")


class _NoReuse:
    """An activation memory that never returns a cache: the full-recompute reference."""

    def __init__(self) -> None:
        from memos_integrations.activation import ActivationMemory

        self.inner = ActivationMemory()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def lookup(self, model: Any, thread_id: str, ids: Any, **kw: Any) -> Any:
        from memos_integrations.activation import CacheLease

        return CacheLease(None, 0, "miss")

    def set_prefix(self, *a: Any, **kw: Any) -> bool:
        return False


def test_adapter_routing_keys_caches_by_adapter(cube: Any) -> None:
    cube.add(memory=["Bob collects vintage radios.", "Bob's sister is called Ada."], user_id="bob")
    runtime = LocalRuntime(tiny_causal_lm("llama"), byte_tokenizer(), cube=cube, max_new_tokens=4, top_k=0)
    msgs = [{"role": "user", "content": "hello"}]
    base = runtime.generate(msgs, thread_id="shared", user_id="carol")
    assert base.adapter is None
    manifest = cube.para_mem.distill("bob", config=DistillConfig(epochs=2), progress=False)
    assert {m["id"] for m in manifest.memories} == {i.id for i in cube.get_all(user_id="bob")}
    tuned = runtime.generate(msgs, thread_id="shared", user_id="bob")
    assert tuned.adapter == manifest.name
    assert tuned.cache_source != "memory"  # the base model's cache is not valid under a LoRA adapter
    again = runtime.generate(msgs, thread_id="shared", user_id="bob")
    assert again.cache_source == "memory" and again.token_ids == tuned.token_ids
    back = runtime.generate(msgs, thread_id="shared", user_id="carol")
    assert back.adapter is None and back.token_ids == base.token_ids
    assert any(row["action"] == "adapter.distill" for row in cube.audit_log(limit=20))


def test_streaming_matches_invoke_and_reports_cache_reads(tmp_path: Path) -> None:
    from langchain_core.messages import AIMessage, HumanMessage

    from memos_integrations.langchain.chat_model import MemOSChatModel

    runtime = LocalRuntime(tiny_causal_lm("gpt2"), byte_tokenizer(), max_new_tokens=10)
    llm = MemOSChatModel(runtime=runtime)
    cfg: Any = {"configurable": {"thread_id": "s1", "user_id": "u1"}}
    first = llm.invoke([HumanMessage("hi there")], config=cfg)
    chunks = list(llm.stream([HumanMessage("hi there")], config=cfg))
    assert "".join(str(c.content) for c in chunks) == first.content
    assert chunks[-1].usage_metadata["input_token_details"]["cache_read"] > 0  # type: ignore[index]
    follow = llm.invoke([HumanMessage("hi there"), AIMessage(str(first.content)), HumanMessage("more")], config=cfg)
    assert follow.response_metadata["memos"]["cache_source"] == "memory"
    assert follow.usage_metadata["input_token_details"]["cache_read"] > 0  # type: ignore[index]


def test_as_the_model_of_a_langgraph_graph(tmp_path: Path) -> None:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, MessagesState, StateGraph

    from memos_integrations.langchain.chat_model import MemOSChatModel

    llm = MemOSChatModel(runtime=LocalRuntime(tiny_causal_lm("llama"), byte_tokenizer(), max_new_tokens=5))

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke(state["messages"])]}  # no config passed: LangGraph's is used

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_edge(START, "model")
    graph = builder.compile(checkpointer=InMemorySaver())
    cfg: Any = {"configurable": {"thread_id": "g1", "user_id": "dana"}}
    graph.invoke({"messages": [("user", "hello graph")]}, cfg)
    out = graph.invoke({"messages": [("user", "second turn")]}, cfg)
    reply = out["messages"][-1]
    assert reply.response_metadata["memos"]["cache_source"] == "memory"
    assert reply.usage_metadata["input_token_details"]["cache_read"] > 0
    assert "g1" in llm.get_runtime().act_mem.threads()


def test_bad_runtime_input(cube: Any) -> None:
    from memos_integrations.errors import InvalidInputError

    runtime = LocalRuntime(tiny_causal_lm("llama"), byte_tokenizer(), max_new_tokens=3)
    with pytest.raises(InvalidInputError):
        runtime.generate([])
    with pytest.raises(InvalidInputError):
        LocalRuntime(tiny_causal_lm("llama"), byte_tokenizer(), max_new_tokens=0)
    gen = runtime.generate([{"role": "user", "content": "x"}], thread_id="never-seen-before")
    assert gen.cache_source in {"miss", "prefix"}


def test_shared_prefix_holds_pinned_frozen_and_hot_memories(cube: Any) -> None:
    from memos_integrations.schedule import MemScheduler, SchedulerPolicy

    tagged = cube.add(memory="Alice prefers short answers.", user_id="alice", tags=["pinned"])[0]
    flagged = cube.add(memory="Alice is vegetarian.", user_id="alice", metadata={"pinned": True})[0]
    frozen, hot, plain = cube.add(memory=["Alice's sister is Lena.", "Alice's cat is Miso.", "Alice once visited Oslo."],
                                  user_id="alice")
    cube.add(memory="Bob is allergic to nuts.", user_id="bob", tags=["pinned"])
    scheduler = MemScheduler(cube, SchedulerPolicy(promote_hits=2))
    scheduler.freeze([frozen.id])
    for _ in range(2):
        cube.search("what is the cat called", user_id="alice", top_k=1)   # returns `hot` twice
    assert scheduler.promote() >= 1
    runtime = LocalRuntime(tiny_causal_lm("llama"), byte_tokenizer(), cube=cube, max_new_tokens=2)
    prefix = runtime.pinned_memories("alice")
    assert prefix[:3] == [tagged.text, flagged.text, frozen.text] and hot.text in prefix   # creation order: stable
    assert plain.text not in prefix and "Bob is allergic to nuts." not in prefix          # unused, and another user's
    assert prefix == runtime.pinned_memories("alice")                                    # same tokens next turn
