"""The LLM reader on LangChain's fake chat models (no sockets): extraction, reconciliation, bi-temporal
truth, history, budgets, idempotent windows, bad replies. The wire protocol is tested in
tests/integration/test_reader_wire.py against a real HTTP stand-in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig
from memos_integrations.errors import InvalidInputError, ReaderError
from memos_integrations.items import Kind
from memos_integrations.readers import AddResult, LLMReader, ReaderConfig
from tests.openai_standin import rule_responder


class RuleChat(BaseChatModel):
    """A LangChain chat model that answers with the stand-in's rules (deterministic, offline)."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "rule-chat"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        self.calls += 1
        roles = {"system": "system", "human": "user", "ai": "assistant"}
        request = {"messages": [{"role": roles.get(m.type, "user"), "content": str(m.content)} for m in messages]}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=rule_responder(request)))])


def maya(text: str, **kw: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "name": "Maya", "content": text, **kw}]


@pytest.fixture
def rcube(tmp_path: Path, embedder: Any) -> Any:
    chat = RuleChat()
    c = MemCube.init_from_dir(tmp_path / "cube", embedder=embedder, reader=LLMReader.from_langchain(chat))
    c.chat = chat
    yield c
    c.close()


def facts(cube: Any, query: str, **kw: Any) -> list[str]:
    return [h.item.text for h in cube.search(query, user_id="maya", kinds=["fact", "preference", "event"], **kw)]


def test_existing_add_without_reader_is_unchanged(cube: Any) -> None:
    out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
    assert type(out) is list and len(out) == 1 and out[0].kind == Kind.MESSAGE


def test_fine_extracts_typed_memories_with_provenance(rcube: Any) -> None:
    out = rcube.add(messages=maya("I live in Lisbon and I love green tea", id="D1:1"), user_id="maya",
                    timestamp="9:02 am on 3 June, 2024")
    assert isinstance(out, AddResult) and isinstance(out, list)
    raw, *memories = out.items
    assert raw.kind == Kind.MESSAGE
    by_kind = {m.kind: m for m in memories}
    assert by_kind[Kind.FACT].text == "Maya lives in Lisbon"
    assert by_kind[Kind.PREFERENCE].metadata["preference"] == "explicit"
    fact = by_kind[Kind.FACT]
    assert fact.sources == ["D1:1"] and fact.metadata["source_items"] == [raw.id]
    assert fact.method == "llm_reader:RuleChat" and fact.confidence == 0.9 and fact.created_by == "maya"
    assert fact.metadata["relations"] == [["Maya", "lives_in", "Lisbon"]]
    assert fact.valid_from.date().isoformat() == "2024-06-03"
    assert [o[0] for o in out.operations] == ["ADD", "ADD"]
    assert out.usage.calls == 1 and out.usage.prompt_tokens > 0  # nothing to reconcile against: one call
    assert [e.type for e in rcube.graph.edges([fact.id], "out")] == ["derived_from"]


def test_event_time_is_resolved_against_the_message_time(rcube: Any) -> None:
    out = rcube.add(messages=maya("I went to a support group yesterday"), user_id="maya", timestamp="1:56 pm on 8 May, 2023")
    event = [m for m in out if m.kind == Kind.EVENT][0]
    assert event.event_time.date().isoformat() == "2023-05-07"


def test_supersede_keeps_history_and_as_of(rcube: Any) -> None:
    first = rcube.add(messages=maya("I live in Lisbon"), user_id="maya", timestamp="2023-01-05")
    old_id = first.operations[0][1]
    second = rcube.add(messages=maya("I moved to Porto"), user_id="maya", timestamp="2024-06-03")
    assert second.operations[0][:2] == ("SUPERSEDE", old_id) and second.usage.calls == 2
    assert facts(rcube, "where does Maya live?")[0] == "Maya lives in Porto"
    assert "Maya lives in Lisbon" not in facts(rcube, "where does Maya live?")
    assert facts(rcube, "where does Maya live?", as_of="2024-01-01")[0] == "Maya lives in Lisbon"
    versions = rcube.history(old_id)
    assert [v.text for v in versions] == ["Maya lives in Lisbon"] * 2
    assert versions[-1].valid_to.date().isoformat() == "2024-06-03"
    assert versions[-1].metadata["superseded_by"] == second.operations[0][2] and versions[-1].created_by == "maya"
    assert [(e.type, e.dst) for e in rcube.graph.edges([old_id], "out", ["superseded_by"])] == [
        ("superseded_by", second.operations[0][2])]


def test_correction_is_an_update_with_history(rcube: Any) -> None:
    old_id = rcube.add(messages=maya("I live in Lisbon"), user_id="maya", timestamp="2023-01-05").operations[0][1]
    out = rcube.add(messages=maya("Actually I live in Porto, not Lisbon"), user_id="maya", timestamp="2023-01-06")
    assert out.operations == [("UPDATE", old_id, "Maya lives in Lisbon", "Maya lives in Porto")]
    assert [v.text for v in rcube.history(old_id)] == ["Maya lives in Lisbon", "Maya lives in Porto"]
    assert rcube.history(old_id)[-1].metadata["op"] == "UPDATE"


def test_forget_deletes_only_on_request(rcube: Any) -> None:
    old_id = rcube.add(messages=maya("I live in Lisbon"), user_id="maya").operations[0][1]
    out = rcube.add(messages=maya("Please forget where I live"), user_id="maya")
    assert out.operations == [("DELETE", old_id)]
    assert facts(rcube, "where does Maya live?") == []
    assert rcube.history(old_id)[-1].state.value == "deleted"


def test_invented_ids_and_unasked_deletes_are_refused(tmp_path: Path, embedder: Any) -> None:
    extraction = json.dumps({"memories": [{"type": "fact", "text": "Maya lives in Porto", "sources": ["m1", "m99"]}]})
    first = json.dumps({"memories": [{"type": "fact", "text": "Maya lives in Lisbon", "sources": ["m1"]}]})
    decisions = json.dumps({"decisions": [{"id": "c1", "op": "SUPERSEDE", "target": "e7"},
                                          {"id": "c1", "op": "DELETE", "target": "e1"}]})
    chat = FakeListChatModel(responses=[first, extraction, decisions])
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder, reader=LLMReader.from_langchain(chat)) as cube:
        cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        out = cube.add(messages=maya("I moved to Porto"), user_id="maya")
        assert [r["why"].split(" ")[0] for r in out.refused] == ["unknown", "DELETE"]
        assert [o[0] for o in out.operations] == ["ADD"]  # nothing lost, nothing invented
        assert out[-1].metadata["source_items"] == [out[0].id]  # m99 was never shown
        assert sorted(facts(cube, "where does Maya live?")) == ["Maya lives in Lisbon", "Maya lives in Porto"]


def test_tolerant_parse_and_one_repair_round(tmp_path: Path, embedder: Any) -> None:
    fenced = 'Sure! ```json\n{"memories": [{"type": "fact", "text": "Maya lives in Lisbon", "sources": ["m1"],},]}\n```'
    chat = FakeListChatModel(responses=[fenced, "not json at all", '{"memories": []}', "nope", "still nope"])
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder, reader=LLMReader.from_langchain(chat)) as cube:
        assert [o[2] for o in cube.add(messages=maya("I live in Lisbon"), user_id="maya").operations] == ["Maya lives in Lisbon"]
        out = cube.add(messages=maya("hello there"), user_id="maya")  # bad, then repaired to an empty list
        assert out.operations == [] and out.usage.calls == 2 and len(out) == 1
        out = cube.add(messages=maya("and again"), user_id="maya")  # bad twice: raw kept, window stays queued
        assert len(out) == 1 and out[0].text == "and again" and "stays queued" in out.note
        assert out.usage.calls == 2 and cube.audit_log(1)[0]["detail"]["usage"]["calls"] == 2  # failed calls cost too
        [job] = cube.pending()
        assert job.state == "queued" and "ReaderError" in job.error
        assert cube.audit_log(1)[0]["action"] == "reader_failed"


def test_identical_window_is_not_read_again(rcube: Any) -> None:
    rcube.add(messages=maya("I live in Lisbon"), user_id="maya", timestamp="2023-01-05")
    calls = rcube.chat.calls
    again = rcube.add(messages=maya("I live in Lisbon"), user_id="maya", timestamp="2023-01-05")
    assert rcube.chat.calls == calls and again.operations == [] and "not read again" in again.note
    assert len(again) == 1  # the raw message is stored as always


def test_zero_budget_stores_raw_and_keeps_the_window(tmp_path: Path, embedder: Any) -> None:
    chat = RuleChat()
    reader = LLMReader.from_langchain(chat, user_token_budget=0)
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder, reader=reader) as cube:
        out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert len(out) == 1 and chat.calls == 0 and "BudgetExceededError" in out.note
        [job] = cube.pending(user_id="maya")
        assert job.state == "failed" and "budget" in job.error
        assert cube.audit_log(1)[0]["action"] == "reader_failed"


def test_fine_token_budget_falls_back_to_fast_and_says_so(tmp_path: Path, embedder: Any) -> None:
    chat = RuleChat()
    reader = LLMReader.from_langchain(chat, fine_token_budget=10)
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder, reader=reader) as cube:
        out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert out.operations == [] and "fell back from fine to fast" in out.note
        assert cube.wait(30) and facts(cube, "where does Maya live?") == ["Maya lives in Lisbon"]


def test_usage_is_counted_per_user_and_cube(rcube: Any) -> None:
    out = rcube.add(messages=maya("I live in Lisbon"), user_id="maya")
    assert rcube.reader_engine.usage("maya")["prompt_tokens"] == out.usage.prompt_tokens > 0
    assert rcube.reader_engine.usage()["calls"] == 1


def test_decision_is_one_transaction(rcube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.conftest import snapshot

    rcube.add(messages=maya("I live in Lisbon"), user_id="maya")
    engine = rcube.reader_engine

    def broken(*a: Any, **k: Any) -> None:
        raise InvalidInputError("ledger write failed (injected)")

    monkeypatch.setattr(engine.ledger, "add", broken)
    before = len(rcube.get_all(user_id="maya"))
    out = rcube.add(messages=maya("I moved to Porto"), user_id="maya")
    assert out.operations == [] and len(rcube.get_all(user_id="maya")) == before + 1  # only the raw message
    assert facts(rcube, "where does Maya live?") == ["Maya lives in Lisbon"]  # the supersede rolled back
    assert rcube.pending()[0].state == "queued"
    monkeypatch.undo()
    rcube.retry_failed()
    assert rcube.wait(30) and facts(rcube, "where does Maya live?")[0] == "Maya lives in Porto"
    assert snapshot(rcube)[0]["items"] == before + 2


def test_mode_needs_a_reader(cube: Any) -> None:
    with pytest.raises(InvalidInputError, match="needs an LLM reader"):
        cube.add(messages=maya("hi"), user_id="maya", mode="fine")
    assert cube.add(messages=maya("hi"), user_id="maya", mode="fast").mode == "fast"


def test_api_key_is_never_written(tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ReaderConfig(model="m", base_url="http://127.0.0.1:9/v1", api_key="sk-very-secret")
    assert "sk-very-secret" not in cfg.model_dump_json() and "sk-very-secret" not in repr(cfg)
    reader = LLMReader.from_openai(model="m", base_url="http://127.0.0.1:9/v1", api_key="sk-very-secret")
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder, reader=reader):
        pass
    written = b"".join(p.read_bytes() for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert b"sk-very-secret" not in written
    assert json.loads((tmp_path / "c" / "cube.json").read_text())["config"]["reader"]["model"] == "m"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    with MemCube.open(tmp_path / "c", embedder=embedder) as again:  # the reader is rebuilt from cube.json + env
        assert again.reader.config.model == "m" and again.reader.backend.client.api_key == "sk-from-env"


def test_cube_config_takes_a_reader_config() -> None:
    cfg = CubeConfig(reader=ReaderConfig(model="qwen2.5", base_url="http://localhost:11434/v1"))
    assert CubeConfig.model_validate(cfg.to_json_dict()).reader.model == "qwen2.5"
    assert CubeConfig().reader == "fast"


def test_reader_errors_name_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ReaderError, match="OPENAI_API_KEY"):
        LLMReader.from_openai(model="gpt-4o-mini")


def test_a_window_of_no_user_never_reconciles_against_a_users_memories(rcube: Any) -> None:
    rcube.add(messages=maya("I live in Lisbon"), user_id="maya")
    out = rcube.add(messages=maya("I moved to Porto"))  # no user: must not supersede Maya's memory
    assert [o[0] for o in out.operations] == ["ADD"] and out.usage.calls == 1
    assert facts(rcube, "where does Maya live?") == ["Maya lives in Lisbon"]


def test_cube_budget_counts_every_user(tmp_path: Path, embedder: Any) -> None:
    chat = RuleChat()
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder,
                               reader=LLMReader.from_langchain(chat, cube_token_budget=300)) as cube:
        first = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert first.operations  # checked before the call: a window that fits the estimate is read
        later = cube.add(messages=[{"role": "user", "name": "Bo", "content": "I live in Oslo"}], user_id="bo")
        assert later.operations == [] and "cube token budget" in later.note
        assert [j.user_id for j in cube.pending()] == ["bo"]


def test_concurrency_limit_holds_across_threads() -> None:
    import threading
    import time

    seen = {"active": 0, "peak": 0}
    lock = threading.Lock()

    class Slow(RuleChat):
        def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
            with lock:
                seen["active"] += 1
                seen["peak"] = max(seen["peak"], seen["active"])
            time.sleep(0.05)
            with lock:
                seen["active"] -= 1
            return super()._generate(messages, stop, run_manager, **kw)

    reader = LLMReader.from_langchain(Slow(), concurrency=2)
    calls = [threading.Thread(target=reader.backend.complete, args=([{"role": "system", "content": "You extract"},
                                                                     {"role": "user", "content": "m1 Maya: hi"}], None, 5))
             for _ in range(6)]
    for t in calls:
        t.start()
    for t in calls:
        t.join()
    assert seen["peak"] == 2


def test_memories_about_one_entity_are_linked_in_the_graph(tmp_path: Path, embedder: Any) -> None:
    reply = json.dumps({"memories": [
        {"type": "fact", "text": "Maya lives in Lisbon", "sources": ["m1"], "entities": ["Maya", "Lisbon"],
         "relations": [["Maya", "lives_in", "Lisbon"]]},
        {"type": "preference", "text": "Maya loves green tea", "sources": ["m1"], "entities": ["maya"]}]})
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder,
                               reader=LLMReader.from_langchain(FakeListChatModel(responses=[reply]))) as cube:
        out = cube.add(messages=maya("I live in Lisbon and I love green tea"), user_id="maya")
        fact, pref = out[1], out[2]
        linked = [(e.dst, e.metadata) for e in cube.graph.edges([fact.id], "out", ["shares_entity"])]
        assert linked == [(pref.id, {"entity": "maya"})]
        assert fact.metadata["relations"] == [["Maya", "lives_in", "Lisbon"]]
        assert [n.id for n in cube.neighbors(fact.id, types=["shares_entity"])] == [pref.id]
