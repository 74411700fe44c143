"""Adversary, session 7: tool lessons are kept out of every face's default recall (they are shown before
the tool call instead), but the organiser treats them as ordinary memories: it clusters a user's lessons
into a topic summary that carries no ``experience_key``, so recall's ``NOT_LESSONS`` filter lets the
lessons back in, quoted by the summary."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage

from memos_integrations.langchain import MemOSMemoryMiddleware
from memos_integrations.toolmem import ToolMemory
from memos_integrations.toolmem.memory import NOT_LESSONS


def _lessons_and_memories(cube: Any) -> None:
    memory = ToolMemory(cube)
    for tool in ("lookup_order", "cancel_order", "refund_order"):
        memory.record("maya", tool, {"order_id": "#12"}, ok=False, error="order id must be digits",
                      error_class="OrderIdError")
    assert len(memory.experiences("maya")) == 3
    cube.add(memory=["Maya's order 12 is a blue lamp.", "Maya ordered a desk too."], user_id="maya", session_id="s1")
    cube.organize(user_id="maya", reader=None)


def test_organised_summaries_do_not_bring_tool_lessons_into_recall(cube: Any) -> None:
    _lessons_and_memories(cube)
    hits = cube.search("how should I call the order tools?", user_id="maya", plan="fast", metadata=NOT_LESSONS,
                       top_k=5)
    assert not [h.item.text for h in hits if "avoid calling it" in h.item.text]
    recall = MemOSMemoryMiddleware(cube, user_id="maya", plan="fast").recall(
        "maya", HumanMessage("how should I call the order tools?", id="h1"))
    assert "avoid calling it" not in recall["text"]
