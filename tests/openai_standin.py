"""A real HTTP server on loopback that speaks OpenAI chat completions, for offline tests of the reader.

The real ``openai`` SDK talks to it over real sockets: JSON responses, server-sent-event streams
(with a final usage chunk when ``stream_options.include_usage`` is set) and ``response_format``
JSON schemas. Replies come from a script (a queue of :class:`Reply` / :class:`Fault` entries), then
from a ``responder`` function of the request; faults are HTTP statuses (429, 500, 400), slow replies
sleep first, and a reply may be any text (malformed JSON included). Usage is counted as four
characters a token, like the reader's own estimate.

Not a mock of the engine: it stands in for the one thing that cannot run here, a hosted LLM.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str
    delay: float = 0.0


@dataclass
class Fault:
    status: int
    message: str = "fault"
    delay: float = 0.0


Responder = Callable[[dict[str, Any]], str]


def tokens(text: str) -> int:
    return max(1, len(text) // 4)


class StandinServer:
    """``with StandinServer(responder) as srv: LLMReader.from_openai(model="m", base_url=srv.url, api_key="x")``."""

    def __init__(self, responder: Responder | None = None, *, latency: float = 0.0, refuse_schema: bool = False) -> None:
        self.responder = responder or (lambda request: '{"memories": []}')
        self.latency = latency
        self.refuse_schema = refuse_schema
        self.script: deque[Reply | Fault] = deque()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY: the headers and the body go out as two writes, and without it the body waited for
            # the client's delayed ACK of the headers (~40 ms a request on loopback; ~1 ms with it)
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                server.handle(self, body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                import sys

                if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
                    super().handle_error(request, client_address)  # a client killed mid-reply is expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, paid by every test's teardown
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> StandinServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def push(self, *entries: Reply | Fault | str) -> None:
        with self.lock:
            self.script.extend(Reply(e) if isinstance(e, str) else e for e in entries)

    def handle(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(body)
            entry = self.script.popleft() if self.script else None
        delay = self.latency + (entry.delay if entry is not None else 0.0)
        if delay:
            time.sleep(delay)
        if isinstance(entry, Fault):
            return self._json(h, entry.status, {"error": {"message": entry.message, "type": "standin", "code": entry.status}})
        if body.get("response_format") and self.refuse_schema:
            return self._json(h, 400, {"error": {"message": "response_format is not supported", "type": "invalid_request_error"}})
        content = entry.content if isinstance(entry, Reply) else self.responder(body)
        prompt = tokens("".join(m.get("content") or "" for m in body.get("messages", [])) +
                        (json.dumps(body["response_format"]) if body.get("response_format") else ""))
        usage = {"prompt_tokens": prompt, "completion_tokens": tokens(content), "total_tokens": prompt + tokens(content)}
        created = int(time.time())
        if body.get("stream"):
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Cache-Control", "no-cache")
            h.send_header("Connection", "close")
            h.end_headers()
            pieces = [content[i:i + 16] for i in range(0, len(content), 16)] or [""]
            for n, piece in enumerate(pieces):
                delta = {"content": piece} if n else {"role": "assistant", "content": piece}
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": created, "model": body.get("model"),
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                h.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            end = {"id": "c1", "object": "chat.completion.chunk", "created": created, "model": body.get("model"),
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            h.wfile.write(f"data: {json.dumps(end)}\n\n".encode())
            if (body.get("stream_options") or {}).get("include_usage"):
                last: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": created, "model": body.get("model"),
                        "choices": [], "usage": usage}
                h.wfile.write(f"data: {json.dumps(last)}\n\n".encode())
            h.wfile.write(b"data: [DONE]\n\n")
            h.wfile.flush()
            h.close_connection = True
            return None
        return self._json(h, 200, {
            "id": "c1", "object": "chat.completion", "created": created, "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage,
        })

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


# -- a scripted "model" for the tests and benchmarks: rules over the prompt, not an LLM ----------------
def rule_responder(request: dict[str, Any]) -> str:
    """A deterministic stand-in for a good model, for statements of the shapes the tests use.

    Extraction: "I live in X" / "I moved to X" / "I now live in X" / "Actually I live in X" become
    "<Speaker> lives in X"; "I like X" / "I love X" a preference; "forget where I live" a forget request.
    Reconciliation: a new "lives in" memory SUPERSEDEs the existing one (UPDATE when the message said
    "actually" or "correction"), the same text is NOOP, a forget request DELETEs every "lives in".
    A tool lesson: "Before calling <tool>, check the arguments; use <instead>." The organiser's calls: a summary is "<n> memories: <first memory>"; a conflict is SUPERSEDE
    unless the newer memory says "also" (KEEP_BOTH).
    """
    import re

    system = request["messages"][0]["content"]
    user = request["messages"][-1]["content"]
    if system.startswith("You summarise"):
        texts = re.findall(r"^\d+\. (.*)$", user, re.M)
        return json.dumps({"summary": f"{len(texts)} memories: {texts[0] if texts else ''}"})
    if system.startswith("You write one lesson"):
        tool = re.search(r"^TOOL: (.*)$", user, re.M)
        instead = re.search(r"Instead use ([^(]+?) \(", user)
        return json.dumps({"lesson": f"Before calling {tool.group(1) if tool else 'the tool'}, check the arguments"
                                     + (f"; use {instead.group(1)}." if instead else ".")})
    if system.startswith("Two memories"):
        newer = re.search(r"^NEWER: (.*)$", user, re.M)
        keep = newer is not None and re.search(r"\balso\b", newer.group(1)) is not None
        return json.dumps({"decision": "KEEP_BOTH" if keep else "SUPERSEDE", "reason": "scripted"})
    if system.startswith("You extract"):
        memories, forget = [], []
        for line in user.splitlines():
            m = re.match(r"(m\d+) (?:\[([^\]]*)\] )?([^:]+): (.*)", line)
            if not m:
                continue
            label, _when, speaker, text = m.groups()
            place = re.search(r"\b(?:live|living|moved|relocated) (?:in|to) ([A-Z][\w-]+)", text)
            if re.search(r"\bforget\b", text, re.I):
                forget.append(f"where {speaker} lives")
            elif place:
                memories.append({"type": "fact", "text": f"{speaker} lives in {place.group(1)}", "sources": [label],
                                 "confidence": 0.9, "entities": [speaker, place.group(1)],
                                 "relations": [[speaker, "lives_in", place.group(1)]],
                                 "preference": "none", "when": None})
            like = re.search(r"\bI (?:like|love|enjoy) ([\w ]+)", text)
            if like:
                memories.append({"type": "preference", "text": f"{speaker} likes {like.group(1).strip()}",
                                 "preference": "explicit", "sources": [label], "confidence": 0.9})
            went = re.search(r"\bI went to (?:a |the )?([\w ]+?) (yesterday|last week|last \w+day)", text)
            if went:
                memories.append({"type": "event", "text": f"{speaker} went to {went.group(1)}", "when": went.group(2),
                                 "sources": [label], "confidence": 0.8})
        return json.dumps({"memories": memories, "forget": forget})
    # reconciliation
    new = re.findall(r'^(c\d+): \[(\w+)\] (.+?)(?: \(from [\d-]+\))?(?: <- "(.*)")?$', user, re.M)
    forgets = re.findall(r"^(f\d+): (.+)$", user, re.M)
    existing = re.findall(r"^(e\d+): \[(\w+)\] (.+?)(?: \(since [\d-]+\))?$", user, re.M)
    decisions = []
    for label, _kind, text, quote in new:
        corrections = bool(re.search(r"\b(actually|correction|not [A-Z])", quote, re.I))
        op, target = "ADD", None
        for elabel, _ekind, etext in existing:
            if etext == text:
                op, target = "NOOP", elabel
                break
            if " lives in " in text and " lives in " in etext and text.split(" lives in ")[0].lower() == etext.split(" lives in ")[0].lower():
                op, target = ("UPDATE" if corrections else "SUPERSEDE"), elabel
        decisions.append({"id": label, "op": op, "target": target, "reason": "scripted"})
    for flabel, _text in forgets:
        for elabel, _ekind, etext in existing:
            if " lives in " in etext:
                decisions.append({"id": flabel, "op": "DELETE", "target": elabel, "reason": "asked to forget"})
    return json.dumps({"decisions": decisions})


# -- the contradiction suite (a test in tests/integration, a benchmark in benchmarks/bench_reader.py) --------
NAMES = ["Ana", "Bruno", "Carla", "Diego", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas"]
CITIES = ["Lisbon", "Porto", "Madrid", "Berlin", "Oslo", "Vienna", "Prague", "Dublin", "Lyon", "Turin", "Kyoto",
          "Quito", "Lima", "Accra", "Hanoi", "Perth", "Cork", "Bergen", "Graz", "Malmo"]
KINDS = ("change", "correction", "forget", "two_changes", "change_with_noise")


@dataclass
class History:
    """One scripted history: messages (with times) of one user, and what must hold afterwards."""

    user: str
    name: str
    kind: str
    turns: list[tuple[str, str]]  # (time, text)
    current: str | None  # the city the current truth names (None: forgotten)
    past: list[tuple[str, str]]  # (as_of time, the city true then)
    old: list[str]  # cities whose text must stay in some memory's history


def contradiction_suite(n: int = 50) -> list[History]:
    """``n`` histories where a fact changes, is corrected, or is forgotten (deterministic)."""
    out = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        name = NAMES[i % len(NAMES)]
        a, b, c = CITIES[i % 20], CITIES[(i + 7) % 20], CITIES[(i + 13) % 20]
        user = f"user{i}"
        if kind == "change":
            out.append(History(user, name, kind, [("2023-01-10", f"I live in {a}."), ("2024-03-01", f"Big news, I moved to {b}!")],
                               b, [("2023-06-01", a)], [a]))
        elif kind == "correction":
            out.append(History(user, name, kind, [("2023-01-10", f"I live in {a}."),
                                                  ("2023-01-11", f"Actually I live in {b}, not {a}.")], b, [], [a]))
        elif kind == "forget":
            out.append(History(user, name, kind, [("2023-01-10", f"I live in {a}."),
                                                  ("2023-02-01", "Please forget where I live.")], None, [], [a]))
        elif kind == "two_changes":
            out.append(History(user, name, kind, [("2022-01-10", f"I live in {a}."), ("2023-01-10", f"I moved to {b}."),
                                                  ("2024-01-10", f"I relocated to {c} last month.")],
                               c, [("2022-06-01", a), ("2023-06-01", b)], [a, b]))
        else:
            out.append(History(user, name, kind, [("2023-01-10", f"I live in {a}."), ("2023-01-11", "I love hiking"),
                                                  ("2023-05-02", "What a rainy week."), ("2024-03-01", f"I moved to {b} in spring.")],
                               b, [("2023-06-01", a)], [a]))
    return out


def check_history(cube: Any, h: History) -> dict[str, bool]:
    """Whether the current truth comes first, and whether every old version is reachable (as_of, history).

    "First" is among the memories about where the user lives: the current one is returned and no
    contradicted version is (``top1`` also says whether it outranked every other memory of the user,
    which is the retrieval's ranking, not the reader's bookkeeping).
    """
    kinds = ["fact", "preference", "event"]
    question = f"where does {h.name} live?"
    hits = cube.search(question, user_id=h.user, kinds=kinds)
    lives = [x.item.text for x in hits if " lives in " in x.item.text]
    expected = [] if h.current is None else [f"{h.name} lives in {h.current}"]
    current_ok = lives == expected
    top1 = h.current is None or (bool(hits) and hits[0].item.text == expected[0])

    def then(when: str) -> list[str]:
        found = cube.search(question, user_id=h.user, kinds=kinds, as_of=when)
        return [x.item.text for x in found if " lives in " in x.item.text]

    as_of_ok = all(then(when) == [f"{h.name} lives in {city}"] for when, city in h.past)
    ids = {row["item"]["id"] for row in cube.export_jsonl()
           if row.get("type") == "item" and row["item"].get("user_id") == h.user and row["item"]["kind"] == "fact"}
    texts = {v.text for i in ids for v in cube.history(i)}  # tombstoned memories included
    history_ok = all(f"{h.name} lives in {city}" in texts for city in h.old)
    return {"current": current_ok, "as_of": as_of_ok, "history": history_ok, "top1": top1}
