"""The memory service on a real uvicorn server on loopback: the openai SDK, many clients at once, slow and
vanishing clients, and schemathesis against the running app's OpenAPI schema (every route; no 500s).

The server runs in a thread of the test process (uvicorn's own loop, a real socket), so it shares the
session's MiniLM embedder. The chat model is the deterministic stand-in, or one whose answer is very long
(to have a stream that a client can leave half-read).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

import httpx  # noqa: E402
from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402

from memos_integrations.langchain.standin import StandInChatModel  # noqa: E402
from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from tests.integration.conftest import free_port  # noqa: E402

USERS = [f"user{n}" for n in range(12)]
#: schemathesis examples per route and mode (kept small for the suite's run time; raise it to hunt)
EXAMPLES = int(os.environ.get("MEMOS_SCHEMATHESIS_EXAMPLES", "8"))


class LongAnswerModel(BaseChatModel):
    """A test model (not an LLM) whose answer is ``words`` words long: a stream to walk away from."""

    words: int = 50_000

    @property
    def _llm_type(self) -> str:
        return "long-answer-test-model"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=" ".join(["word"] * self.words)))])


class Live:
    def __init__(self, home: Path, embedder: Any, chat_model: Any) -> None:
        self.mos = MOS(home, embedder=embedder, chat_model=chat_model)
        self.keys = KeyStore.open(home / "mos.db")
        self.tokens: dict[str, str] = {}
        for user in ["alice", "bob", *USERS]:
            self.mos.create_user(user)
            self.tokens[user] = self.keys.create(user)[0]
        self.app = create_app(self.mos, keys=self.keys, limits=Limits(rate=0, max_body_bytes=64_000), mcp=False)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                   timeout_keep_alive=2, limit_concurrency=200, timeout_graceful_shutdown=3))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)

    def h(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.keys.close()
        self.mos.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("live") / "home", embedder, StandInChatModel())
    r = httpx.post(f"{server.base}/v1/memories", json={"text": "Alice's favourite tea is genmaicha."}, headers=server.h("alice"))
    assert r.status_code == 201, r.text
    yield server
    server.close()


def test_openai_sdk_gets_answers_with_memory_plain_and_streamed(live: Live) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{live.base}/v1", api_key=live.tokens["alice"], max_retries=0)
    reply = client.chat.completions.create(model="memcube", store=False,
                                           messages=[{"role": "user", "content": "Which tea do I like?"}])
    assert "genmaicha" in reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model="memcube", stream=True, store=False,
                                            messages=[{"role": "user", "content": "Which tea do I like?"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == reply.choices[0].message.content and chunks[-1].choices[0].finish_reason == "stop"
    bad = openai.OpenAI(base_url=f"{live.base}/v1", api_key="mk_nope_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="memcube", messages=[{"role": "user", "content": "hi"}])


def _count(live: Live, user: str) -> int:
    r = httpx.get(f"{live.base}/v1/memories?limit=500", headers=live.h(user))
    return len(r.json()["items"])


def _remembering() -> bool:
    """Whether a server thread is writing a chat exchange now (read off the live stacks, nothing patched)."""
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_name == "remember" and frame.f_code.co_filename.endswith("chat.py"):
                return True
            frame = frame.f_back  # type: ignore[assignment]
    return False


def test_a_client_that_leaves_mid_stream_leaves_nothing_written(tmp_path: Path, embedder: Any) -> None:
    server = Live(tmp_path / "home", embedder, LongAnswerModel(words=300_000))
    try:
        httpx.post(f"{server.base}/v1/memories", json={"text": "Bob keeps bees."}, headers=server.h("bob"))
        before = _count(server, "bob")
        body = json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "Tell me everything."}]})
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # a small receive buffer that is never drained: the server cannot push the whole answer out
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.tokens['bob']}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
            first = sock.recv(4096)
            assert b"200 OK" in first and b"text/event-stream" in first
            time.sleep(0.3)
        # the server notices, stops streaming and skips the write; everyone else is served meanwhile
        assert httpx.get(f"{server.base}/healthz").status_code == 200
        deadline = time.monotonic() + 60
        while (server.server.server_state.tasks or _remembering()) and time.monotonic() < deadline:
            assert not _remembering(), "a stream the client left is being written to memory"
            time.sleep(0.05)
        assert not server.server.server_state.tasks, "the abandoned stream is still running"
        assert _count(server, "bob") == before
        server.mos.chat_model.words = 5
        full = httpx.post(f"{server.base}/v1/chat/completions", headers=server.h("bob"), timeout=120,
                          json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "Once more."}]})
        assert full.text.endswith("data: [DONE]\n\n")
        assert _count(server, "bob") == before + 2  # a stream read to the end is remembered, both messages at once
    finally:
        server.close()


def test_slow_and_silent_clients_do_not_stop_the_others(live: Live) -> None:
    socks = []
    try:
        for _ in range(5):  # headers promise a body that never comes, or comes a byte at a time
            s = socket.create_connection(("127.0.0.1", live.port))
            s.sendall(f"POST /v1/memories HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live.tokens['bob']}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"te".encode())
            socks.append(s)
        start = time.monotonic()
        r = httpx.get(f"{live.base}/v1/memories/search?q=tea", headers=live.h("alice"), timeout=10)
        assert r.status_code == 200 and r.json()["hits"] and time.monotonic() - start < 5
    finally:
        for s in socks:
            s.close()
    assert _count(live, "bob") == 0  # the half-sent bodies wrote nothing
    assert httpx.get(f"{live.base}/healthz").status_code == 200


def test_many_clients_at_once_each_see_only_their_own(live: Live) -> None:
    per_user = 6

    def one_user(user: str) -> list[int]:
        codes = []
        with httpx.Client(base_url=live.base, headers=live.h(user), timeout=60) as c:
            for n in range(per_user):
                codes.append(c.post("/v1/memories", json={"text": f"{user} note {n}: likes item {n}"}).status_code)
                r = c.get("/v1/memories/search", params={"q": f"{user} note", "k": 20})
                codes.append(r.status_code)
                assert all(h["item"]["user_id"] == user for h in r.json()["hits"])
        return codes

    with ThreadPoolExecutor(max_workers=len(USERS)) as pool:
        results = list(pool.map(one_user, USERS))
    assert all(code in (200, 201) for codes in results for code in codes)
    for user in USERS:
        items = httpx.get(f"{live.base}/v1/memories?limit=500", headers=live.h(user)).json()["items"]
        assert sorted(i["text"] for i in items) == sorted(f"{user} note {n}: likes item {n}" for n in range(per_user))
    assert httpx.get(f"{live.base}/readyz").json() == {"status": "ready"}


# -- schemathesis against the running server ------------------------------------------------------------------

def _checks() -> list[Any]:
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    def not_a_server_error(ctx: Any, response: Any, case: Any) -> bool:
        assert response.status_code < 500 or response.status_code in (501, 503), (
            f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}")
        return True

    def structured_error(ctx: Any, response: Any, case: Any) -> bool:
        assert response.headers.get("x-request-id"), "no request id"
        if response.status_code >= 400:
            err = json.loads(response.text)["error"]
            assert err["type"].endswith("Error") and err["message"] and err["request_id"], response.text
        return True

    return [not_a_server_error, structured_error, status_code_conformance, content_type_conformance,
            response_schema_conformance]


def test_schemathesis_every_route_no_server_errors(live: Live) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_url(f"{live.base}/openapi.json")
    checks = _checks()
    headers = live.h("alice")
    tested = []
    for result in schema.get_all_operations():
        op = result.ok()
        tested.append(f"{op.method.upper()} {op.path}")
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                case.call_and_validate(base_url=live.base, headers=headers, checks=checks, timeout=60)

            try:
                run()
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE, op.path  # a route with no inputs has no invalid ones
    assert len(tested) >= 21, tested


def test_schemathesis_stateful_links(live: Live) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, settings

    schema = schemathesis.openapi.from_url(f"{live.base}/openapi.json")
    checks = _checks()
    headers = live.h("bob")

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": live.base, "headers": headers, "timeout": 60}

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kw: Any) -> None:
            case.validate_response(response, checks=checks)

    calls: list[str] = []

    class Counted(Machine):  # type: ignore[misc,valid-type]
        def call(self, case: Any, **kwargs: Any) -> Any:
            calls.append(f"{case.method} {case.path}")
            return super().call(case, **kwargs)

    Counted.run(settings=settings(max_examples=EXAMPLES, stateful_step_count=5, deadline=None, database=None,
                                  suppress_health_check=list(HealthCheck)))
    assert len(calls) >= EXAMPLES and len(set(calls)) > 3, calls


def test_memcube_serve_runs_the_service(tmp_path: Path) -> None:
    import subprocess

    from memos_integrations.cli import main

    home = tmp_path / "home"
    root = Path(__file__).resolve().parents[2]
    assert main(["keys", "create", "--home", str(home), "--user", "alice"]) == 0  # signs alice up, prints a key
    keys = KeyStore.open(home / "mos.db")
    try:
        key, _ = keys.create("alice")  # a second key, read here rather than off the captured output
    finally:
        keys.close()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "memos_integrations.cli", "serve", "--home", str(home), "--port", str(port),
                             "--chat-model", "stand-in"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "memcube serve did not answer in 120 s"
            time.sleep(0.3)
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{base}/v1/memories", json={"text": "I like genmaicha"}, headers=auth, timeout=60).status_code == 201
        reply = httpx.post(f"{base}/v1/chat/completions", headers=auth, timeout=60,
                           json={"model": "m", "messages": [{"role": "user", "content": "which tea?"}]}).json()
        assert "genmaicha" in reply["choices"][0]["message"]["content"]
        assert httpx.get(f"{base}/v1/cubes", timeout=10).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
