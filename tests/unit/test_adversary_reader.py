"""Adversary checks of the LLM reader: a hostile or broken model reply. Each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from memos_integrations import MemCube
from memos_integrations.items import Kind
from memos_integrations.readers import LLMReader


def _cube(tmp_path: Path, embedder: Any, *replies: str) -> Any:
    chat = FakeListChatModel(responses=list(replies))
    return MemCube.init_from_dir(tmp_path / "cube", embedder=embedder, reader=LLMReader.from_langchain(chat))


def _memories(cube: Any) -> list[Any]:
    return [i for i in cube.get_all(user_id="maya") if i.kind != Kind.MESSAGE]


def test_a_reply_with_a_thousand_memories_for_one_message_writes_a_bounded_number(tmp_path: Path, embedder: Any) -> None:
    reply = json.dumps({"memories": [{"type": "fact", "text": f"Maya owns item number {n}", "sources": ["m1"]}
                                     for n in range(1000)]})
    cube = _cube(tmp_path, embedder, reply)
    try:
        out = cube.add(messages=[{"role": "user", "content": "I own a few things"}], user_id="maya", mode="fine")
        written = _memories(cube)
        assert 0 < len(written) <= 50, len(written)
        assert any("dropped" in str(r.get("why", "")) for r in out.refused)
    finally:
        cube.close()


def test_giant_entity_and_relation_strings_from_the_model_are_capped(tmp_path: Path, embedder: Any) -> None:
    huge = "E" * 200_000
    reply = json.dumps({"memories": [{"type": "fact", "text": "Maya lives in Lisbon", "sources": ["m1"],
                                      "entities": [huge] * 20, "relations": [[huge, huge, huge]] * 20}]})
    cube = _cube(tmp_path, embedder, reply)
    try:
        cube.add(messages=[{"role": "user", "content": "I live in Lisbon"}], user_id="maya", mode="fine")
        (fact,) = _memories(cube)
        assert len(json.dumps(fact.metadata)) < 20_000, len(json.dumps(fact.metadata))
    finally:
        cube.close()


def test_entities_given_as_a_string_are_not_split_into_letters(tmp_path: Path, embedder: Any) -> None:
    reply = json.dumps({"memories": [{"type": "fact", "text": "Maya lives in Lisbon", "sources": ["m1"],
                                      "entities": "Lisbon", "relations": "Maya lives_in Lisbon"}]})
    cube = _cube(tmp_path, embedder, reply)
    try:
        cube.add(messages=[{"role": "user", "content": "I live in Lisbon"}], user_id="maya", mode="fine")
        (fact,) = _memories(cube)
        assert fact.metadata.get("entities", []) in ([], ["Lisbon"]) and not fact.metadata.get("relations")
    finally:
        cube.close()


def test_a_worker_whose_lease_ran_out_cannot_finish_the_window_a_second_worker_took(tmp_path: Path) -> None:
    """Two workers, one window: the first stalls past its lease, the second claims it. The first's
    finish must be refused (its transaction, with its writes, rolls back), or the window is applied twice."""
    import pytest

    from memos_integrations.errors import ConflictError
    from memos_integrations.storage.jobs import JobQueue
    from memos_integrations.storage.sql import SQLiteDatabase

    queue = JobQueue(SQLiteDatabase(tmp_path / "jobs.db"))
    job, _ = queue.enqueue("read", "window", {"ids": ["a"]})
    stale = queue.claim("read", lease_s=-1)  # its lease is already over: as if it stalled for minutes
    fresh = queue.claim("read", lease_s=60)
    assert stale is not None and fresh is not None and fresh.id == stale.id
    with pytest.raises(ConflictError):
        with queue.db.transaction():
            queue.finish(stale.id, {"by": "stale"}, attempt=stale.attempts)
    with pytest.raises(ConflictError):
        queue.fail(stale.id, "late failure", final=True, attempt=stale.attempts)
    assert queue.pending("read")[0].state == "running"  # still the second worker's
    with queue.db.transaction():
        queue.finish(fresh.id, {"by": "fresh"}, attempt=fresh.attempts)
    assert queue.get("read", "window").result == {"by": "fresh"}  # type: ignore[union-attr]


def test_concurrent_adds_cannot_both_spend_a_budget_that_fits_one_window(tmp_path: Path, embedder: Any) -> None:
    """The budget is checked before the call; two adds racing past the check would both spend it."""
    import threading
    import time

    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    from tests.openai_standin import rule_responder

    class SlowRules(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "slow-rules"

        def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
            time.sleep(0.5)
            roles = {"system": "system", "human": "user", "ai": "assistant"}
            request = {"messages": [{"role": roles.get(m.type, "user"), "content": str(m.content)} for m in messages]}
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=rule_responder(request)))])

    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder,
                               reader=LLMReader.from_langchain(SlowRules(), cube_token_budget=300)) as cube:
        outs: dict[str, Any] = {}
        start = threading.Barrier(2)

        def add(user: str, city: str) -> None:
            start.wait()
            outs[user] = cube.add(messages=[{"role": "user", "name": user, "content": f"I live in {city}"}],
                                  user_id=user, mode="fine")

        threads = [threading.Thread(target=add, args=a) for a in (("maya", "Lisbon"), ("bo", "Oslo"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        read = [u for u, out in outs.items() if out.operations]
        assert len(outs) == 2 and len(read) == 1, {u: (o.operations, o.note) for u, o in outs.items()}
        assert cube.reader_engine.ledger.tokens("cube") <= 300 + 150  # one window at most (its estimate fitted)


def test_search_times_of_the_wrong_type_are_a_memos_error_not_an_attribute_error(cube: Any) -> None:
    import datetime as dt

    import pytest

    from memos_integrations.errors import MemosError

    cube.add(memory="Maya lives in Lisbon", user_id="maya")
    for bad in (True, float("nan"), object(), [2020]):
        for field in ("now", "as_of"):
            with pytest.raises(MemosError):
                cube.search("where does maya live", user_id="maya", **{field: bad})
    for fine in ("2020-01-01", dt.date(2020, 1, 1), dt.datetime(2020, 1, 1)):
        assert cube.search("where does maya live", user_id="maya", now=fine)  # a date is a time, as in as_of
    try:
        assert cube.search("where does maya live", user_id="maya", as_of=dt.datetime(1, 1, 1)) == []
    except MemosError:
        pass  # refusing a time before any the cube stores is as good as finding nothing
