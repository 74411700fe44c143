"""The LLM reader over the real wire: the official ``openai`` SDK against a real HTTP server on loopback
(tests/openai_standin.py) speaking chat completions, JSON schemas, SSE streams and faults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MOS, MemCube
from memos_integrations.items import Kind
from memos_integrations.readers import LLMReader
from tests.openai_standin import Fault, Reply, StandinServer, check_history, contradiction_suite, rule_responder


def maya(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "name": "Maya", "content": text}]


@pytest.fixture
def srv() -> Any:
    with StandinServer(rule_responder) as server:
        yield server


def open_cube(path: Path, embedder: Any, url: str, **options: Any) -> MemCube:
    options.setdefault("backoff_s", 0.01)
    reader = LLMReader.from_openai(model="standin", base_url=url, api_key="test-key", **options)
    return MemCube.init_from_dir(path, embedder=embedder, reader=reader)


def raw_only(cube: MemCube, user: str = "maya") -> bool:
    return all(it.kind == Kind.MESSAGE for it in cube.get_all(user_id=user, include_archived=True))


def test_json_schema_and_usage(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    with open_cube(tmp_path / "c", embedder, srv.url, prompt_price_per_1k=0.5, completion_price_per_1k=1.0) as cube:
        out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert out.operations[0][2] == "Maya lives in Lisbon"
        request = srv.requests[0]
        assert request["response_format"]["type"] == "json_schema" and request["model"] == "standin"
        assert out.usage.prompt_tokens > 0 and out.usage.cost == pytest.approx(
            (out.usage.prompt_tokens * 0.5 + out.usage.completion_tokens * 1.0) / 1000)
        assert cube.audit_log(1)[0]["detail"]["usage"]["prompt_tokens"] == out.usage.prompt_tokens


def test_streaming(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    with open_cube(tmp_path / "c", embedder, srv.url, stream=True) as cube:
        cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        out = cube.add(messages=maya("I moved to Porto"), user_id="maya")
        assert [o[0] for o in out.operations] == ["SUPERSEDE"] and srv.requests[-1]["stream"] is True
        assert out.usage.completion_tokens > 0 and out.usage.calls == 2


def test_endpoint_without_json_schema(tmp_path: Path, embedder: Any, embedder_unused: None = None) -> None:
    with StandinServer(rule_responder, refuse_schema=True) as srv, open_cube(tmp_path / "c", embedder, srv.url) as cube:
        out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert out.operations[0][2] == "Maya lives in Lisbon"
        assert "response_format" in srv.requests[0] and "response_format" not in srv.requests[-1]


def test_429_and_500_are_retried(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    srv.push(Fault(429, "slow down"), Fault(500, "oops"))
    with open_cube(tmp_path / "c", embedder, srv.url, max_retries=3) as cube:
        out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert out.operations and out.usage.calls == 1 and len(srv.requests) == 3


def test_endpoint_failing_keeps_raw_and_queues_the_window(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    srv.push(*[Fault(500, "down")] * 4)
    with open_cube(tmp_path / "c", embedder, srv.url, max_retries=1) as cube:
        out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert len(out) == 1 and out.operations == [] and "stays queued" in out.note and raw_only(cube)
        [job] = cube.pending()
        assert job.state == "queued" and "InternalServerError" in job.error and job.attempts == 1
        assert cube.audit_log(1)[0]["action"] == "reader_failed"
        srv.script.clear()  # the endpoint recovers: the queue reads the window
        assert cube.wait(30) and cube.pending() == []
        assert [m.text for m in cube.get_all(user_id="maya", kinds=["fact"])] == ["Maya lives in Lisbon"]


def test_endpoint_down(tmp_path: Path, embedder: Any) -> None:
    with StandinServer() as srv:
        url = srv.url
    with open_cube(tmp_path / "c", embedder, url, max_retries=1) as cube:  # nothing listens there any more
        out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert len(out) == 1 and raw_only(cube) and "APIConnectionError" in cube.pending()[0].error


def test_slow_reply_times_out(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    srv.push(Reply('{"memories": []}', delay=2.0))
    with open_cube(tmp_path / "c", embedder, srv.url, timeout_s=0.3, max_retries=0) as cube:
        out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert raw_only(cube) and "APITimeoutError" in cube.pending()[0].error and len(out) == 1


def test_malformed_json_gets_one_repair(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    srv.push("{memories: [oops", '{"memories": [{"type": "fact", "text": "Maya lives in Lisbon", "sources": ["m1"]}]}')
    with open_cube(tmp_path / "c", embedder, srv.url) as cube:
        out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert out.operations[0][2] == "Maya lives in Lisbon" and out.usage.calls == 2
        assert srv.requests[1]["messages"][-1]["content"].startswith("Your reply was not valid JSON")


def test_empty_list_and_empty_input(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    srv.push('{"memories": []}')
    with open_cube(tmp_path / "c", embedder, srv.url) as cube:
        out = cube.add(messages=maya("hello!"), user_id="maya")
        assert len(out) == 1 and out.operations == [] and cube.pending() == []
        with pytest.raises(Exception, match="message 0 content"):
            cube.add(messages=maya("   "), user_id="maya")
        assert cube.add(messages=[], user_id="maya") == []


def test_async_mode_and_wait(tmp_path: Path, embedder: Any) -> None:
    with StandinServer(rule_responder, latency=0.2) as srv, open_cube(tmp_path / "c", embedder, srv.url, mode="async") as cube:
        out = cube.add(messages=maya("I live in Lisbon"), user_id="maya")
        assert out.mode == "async" and len(out) == 1 and cube.pending()
        assert cube.wait(30) and cube.pending() == []
        assert [m.text for m in cube.get_all(user_id="maya", kinds=["fact"])] == ["Maya lives in Lisbon"]


def test_mos_feedback_and_as_of(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    mos = MOS(tmp_path / "mos", embedder=embedder, reader=LLMReader.from_openai(model="s", base_url=srv.url, api_key="k"))
    try:
        mos.create_user("maya")
        mos.create_cube_for_user("maya_cube", "maya")
        mos.add(maya("I live in Lisbon"), user_id="maya", timestamp="2023-01-05")
        out = mos.feedback("No, I moved to Porto in May", user_id="maya", timestamp="2024-05-20")
        assert [o[0] for o in out.operations] == ["SUPERSEDE"]
        now = mos.search("where does Maya live?", user_id="maya", kinds=["fact"])["text_mem"][0]["memories"]
        then = mos.search("where does Maya live?", user_id="maya", kinds=["fact"], as_of="2024-01-01")["text_mem"][0]["memories"]
        assert now[0].item.text.lower() == "maya lives in porto" and then[0].item.text == "Maya lives in Lisbon"
    finally:
        mos.close()


def test_contradiction_suite(tmp_path: Path, embedder: Any, srv: StandinServer) -> None:
    """25 scripted histories (each of the 5 kinds 5 times, every name and city): the current truth first in
    100%, the old version reachable in 100%. ``benchmarks/bench_reader.py`` runs 50 (``--histories``)."""
    suite = contradiction_suite(25)
    with open_cube(tmp_path / "c", embedder, srv.url) as cube:
        for h in suite:
            for when, text in h.turns:
                cube.add(messages=[{"role": "user", "name": h.name, "content": text}], user_id=h.user, timestamp=when)
        results = [(h, check_history(cube, h)) for h in suite]
    failed = [(h.kind, h.user, r) for h, r in results if not (r["current"] and r["as_of"] and r["history"])]
    assert failed == []
