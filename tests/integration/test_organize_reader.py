"""The organiser with the LLM reader over the real wire: the official ``openai`` SDK against the stand-in
server (tests/openai_standin.py). Summaries written by the LLM, conflicts resolved through SUPERSEDE, the
calls counted in the cube's usage ledger and budgets, and extractive fallback when the reader fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.items import Kind
from memos_integrations.readers import LLMReader
from memos_integrations.storage.graph import CONFLICT, SUPERSEDED_BY
from tests.openai_standin import Fault, StandinServer, rule_responder

DOGS = ["Maya adopted a beagle puppy called Pixel.", "Pixel the beagle loves chasing squirrels in the park.",
        "Maya takes her dog Pixel to the vet every spring."]
CARS = ["Maya's car is a red Fiat.", "Maya's car is a blue Volvo."]


@pytest.fixture
def srv() -> Any:
    with StandinServer(rule_responder) as server:
        yield server


def open_cube(path: Path, embedder: Any, url: str, **options: Any) -> MemCube:
    options.setdefault("backoff_s", 0.01)
    reader = LLMReader.from_openai(model="standin", base_url=url, api_key="test-key", **options)
    return MemCube.init_from_dir(path, embedder=embedder, reader=reader)


def topics(cube: MemCube) -> list[Any]:
    return [s for s in cube.get_all(user_id="maya", kinds=[Kind.SUMMARY]) if s.metadata.get("summary") == "topic"]


def test_the_cubes_reader_writes_summaries_and_supersedes_conflicts(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    with open_cube(tmp_path / "c", embedder, srv.url) as cube:
        dogs = cube.add(memory=DOGS, user_id="maya", session_id="s1")
        old, new = cube.add(memory=CARS, user_id="maya", session_id="s2")
        report = cube.organize()  # the configured reader, by default
        assert report.reader_errors == 0 and report.notes == [] and report.reader_calls == len(srv.requests) > 0
        assert all(r["response_format"]["type"] == "json_schema" for r in srv.requests)
        topic = next(s for s in topics(cube) if dogs[0].id in s.sources)
        assert topic.text == f"3 memories: {DOGS[0]}" and topic.metadata["written_by"] == cube.reader.name
        # SUPERSEDE as the reader does it: the old text kept, its validity closed, an edge to the newer one
        closed = cube.history(old.id)[-1]
        assert closed.text == CARS[0] and closed.valid_to is not None and closed.metadata["superseded_by"] == new.id
        assert [e.dst for e in cube.graph.edges([old.id], "out", [SUPERSEDED_BY])] == [new.id]
        assert [e.metadata["status"] for e in cube.graph.edges([new.id], "out", [CONFLICT])] == ["resolved"]
        assert old.id not in {h.item.id for h in cube.search("What car does Maya drive?", user_id="maya", top_k=10)}
        # the calls are counted where window reads are: the cube's and the user's ledger rows
        spent = cube.reader_engine.usage("maya")
        assert spent["calls"] == report.reader_calls and spent["prompt_tokens"] > 0
        # a rerun keeps what the LLM wrote from unchanged sources: no new calls, nothing superseded again
        before = len(srv.requests)
        again = cube.organize(full=True)
        assert again.reader_calls == 0 and len(srv.requests) == before and again.superseded == 0
        assert again.topics_written == 0 and again.episodes_written == 0


def test_keep_both_leaves_the_conflict_flagged(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    with open_cube(tmp_path / "c", embedder, srv.url) as cube:
        old, new = cube.add(memory=["Maya's car is a red Fiat.", "Maya's car is also a blue Volvo."], user_id="maya")
        report = cube.organize()
        assert report.superseded == 0 and cube.get(old.id).valid_to is None
        assert [e.metadata["status"] for e in cube.graph.edges([new.id], "out", [CONFLICT])] == ["flagged"]


def test_a_failing_reader_falls_back_to_extractive_and_says_so(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    srv.push(Fault(500, "down"))
    with open_cube(tmp_path / "c", embedder, srv.url, max_retries=0) as cube:
        cube.add(memory=DOGS + CARS, user_id="maya", session_id="s1")
        report = cube.organize()
        assert report.reader_errors == 1 and report.reader_calls == 1 and len(srv.requests) == 1  # off after one
        assert "InternalServerError" in report.notes[0] and "extractive" in report.notes[0]
        assert topics(cube) and all("written_by" not in s.metadata for s in topics(cube))
        assert report.superseded == 0 and report.conflicts == 1
        healed = cube.organize(full=True)  # the endpoint is back: the LLM rewrites what it did not write
        assert healed.reader_errors == 0 and all(s.metadata.get("written_by") for s in topics(cube))


def test_the_budget_holds_the_organisers_calls(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    with open_cube(tmp_path / "c", embedder, srv.url, user_token_budget=10) as cube:
        cube.add(memory=DOGS, user_id="maya", session_id="s1")
        report = cube.organize()
        assert srv.requests == [] and report.reader_errors == 1 and "BudgetExceededError" in report.notes[0]
        assert topics(cube) and all("written_by" not in s.metadata for s in topics(cube))


def test_reader_none_is_extractive(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    with open_cube(tmp_path / "c", embedder, srv.url) as cube:
        cube.add(memory=DOGS + CARS, user_id="maya", session_id="s1")
        report = cube.organize(reader=None)
        assert srv.requests == [] and report.reader_calls == 0 and report.conflicts == 1 and report.superseded == 0


# -- tool memory: lessons worded by the LLM reader -----------------------------------------------------
def test_tool_lessons_are_worded_by_the_reader(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    from memos_integrations.toolmem import ToolMemory

    with open_cube(tmp_path / "c", embedder, srv.url) as cube:
        memory = ToolMemory(cube, writer=cube.reader.tool_lesson_writer(cube))
        memory.record("maya", "lookup_order", {"order_id": "#12"}, ok=False, error="digits only", error_class="OrderIdError")
        memory.record("maya", "lookup_order", {"order_id": "12"}, ok=True)
        [lesson] = memory.experiences("maya")
        assert lesson.text == "Before calling lookup_order, check the arguments; use order_id='12'."
        assert "lookup_order" in memory.render("maya", ["lookup_order"])
        lessons = [r for r in srv.requests if r["messages"][0]["content"].startswith("You write one lesson")]
        assert lessons and "OrderIdError" in lessons[-1]["messages"][-1]["content"]
        assert cube.reader_engine.usage("maya")["calls"] == len(srv.requests)  # counted under the calls' user
        before = len(srv.requests)
        memory.distil("maya")  # the same facts: the same wording, no new call
        assert len(srv.requests) == before and memory.experiences("maya")[0].text == lesson.text


def test_a_failing_lesson_writer_keeps_the_extractive_wording(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    from memos_integrations.toolmem import ToolMemory

    srv.push(Fault(500, "down"))
    with open_cube(tmp_path / "c", embedder, srv.url, max_retries=0) as cube:
        writer = cube.reader.tool_lesson_writer(cube)
        memory = ToolMemory(cube, writer=writer)
        memory.record("maya", "lookup_order", {"order_id": "#12"}, ok=False, error="digits only", error_class="OrderIdError")
        [lesson] = memory.experiences("maya")
        assert lesson.text.startswith("lookup_order: avoid calling it with") and writer.errors == 1
