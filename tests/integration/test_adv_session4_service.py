"""Adversary checks (session 4) on the service's face routes: each test failed on the code it was written against."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("llama_index.core")

from fastapi.testclient import TestClient  # noqa: E402
from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402

from memos_integrations import MOS  # noqa: E402
from memos_integrations.llama_index import MemOSVectorStore as LlamaStore  # noqa: E402
from memos_integrations.remote import RemoteCube  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from tests.integration.service_kit import DIM, Svc  # noqa: E402


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    """alice owns ``shared`` (bob reads it); ``helper`` is alice's agent key."""
    home = tmp_path_factory.mktemp("s4")
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=DIM))
    keys = KeyStore.open(mos.home)
    for user in ("alice", "bob", "carol"):
        mos.create_user(user)
    mos.create_cube_for_user("shared", owner_id="alice")
    mos.create_cube_for_user("bob_own", owner_id="bob")
    mos.share_cube_with_user("shared", "bob", "read", user_id="alice")
    issued = {u: keys.create(u)[0] for u in ("alice", "bob", "carol")}
    issued["helper"] = keys.create("alice", agent_id="helper")[0]
    app = create_app(mos, keys=keys, limits=Limits(rate=0, max_body_bytes=16 * 1024), mcp=False)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Svc(mos, http, issued, "shared")
    keys.close()
    mos.close()


def _node(i: int, text: str = "") -> TextNode:
    return TextNode(id_=f"n{i}", text=text or f"node number {i}", embedding=[float(i + 1)] + [0.5] * (DIM - 1))


# -- item 1: an agent key's LlamaIndex writes were recorded as the user, without the agent ------------
def test_an_agent_keys_llama_index_writes_carry_the_agent(svc: Svc) -> None:
    store = LlamaStore(svc.remote("helper"), namespace="agentns")
    store.add([_node(1)])
    view = svc.mos.cube("shared", user_id="alice")
    item = view.get(store.item_id("n1"))
    assert (item.user_id, item.agent_id, item.created_by) == ("alice", "helper", "agent:helper")
    store.delete_nodes(["n1"])
    last = view.history(item.id)[-1]
    assert last.created_by == "agent:helper"
    # the LangChain vector store: an agent key's write and a local store bound to that agent record the same
    from memos_integrations.langchain import MemOSVectorStore as LangChainStore

    embedding = DeterministicFakeEmbedding(size=DIM)
    LangChainStore(svc.remote("helper"), embedding, kind="document").add_texts(["remote agent doc"], ids=["ra"])
    LangChainStore(view, embedding, user_id="alice", agent_id="helper", kind="document").add_texts(
        ["local agent doc"], ids=["la"])
    remote_doc, local_doc = view.get("ra"), view.get("la")
    assert (remote_doc.agent_id, remote_doc.created_by) == (local_doc.agent_id, local_doc.created_by) \
        == ("helper", "agent:helper")
    # the other face routes file an agent key's writes under its agent too (guards)
    from langchain_core.messages import HumanMessage

    from memos_integrations.langchain import MemOSChatMessageHistory
    from memos_integrations.langgraph import MemOSStore

    MemOSChatMessageHistory(svc.remote("helper"), "agent-s", remember=True).add_messages(
        [HumanMessage("The helper notes that Alice likes oolong.")])
    MemOSStore(svc.remote("helper"), index={"dims": DIM, "fields": ["text"]}).put(
        ("users", "alice", "notes"), "k1", {"text": "a store note"})
    [said] = [i for i in view.get_all() if "oolong" in i.text]
    assert (said.user_id, said.agent_id) == ("alice", "helper")
    # a store item's scope is its namespace's (as locally: ("users", "alice") is alice's); the writer is the
    # agent, named as a local run whose context names it (it was the bare name "helper")
    [noted] = [i for i in view.get_all() if "store note" in i.text]
    assert (noted.user_id, noted.agent_id, noted.created_by) == ("alice", None, "agent:helper")


# -- item 2: a session of another user answered 403 where an unknown one answered []: its name leaked -----
def test_a_reader_cannot_tell_another_users_session_from_an_unknown_one(svc: Svc) -> None:
    owner = svc.post("alice", "/v1/faces/chat-history",
                     {"cube_id": "shared", "op": "add", "session_id": "alice-diary",
                      "messages": [{"type": "human", "data": {"content": "my secret", "type": "human"}}]})
    assert owner.status_code == 200, owner.text

    def answer(session: str, op: str = "messages") -> tuple[int, Any]:
        r = svc.post("bob", "/v1/faces/chat-history", {"cube_id": "shared", "op": op, "session_id": session})
        return r.status_code, r.json().get("messages", r.json().get("error", {}).get("message"))

    assert answer("alice-diary") == answer("no-such-session") == (200, [])
    assert answer("alice-diary", "clear") == answer("no-such-session", "clear")  # a reader may not write: both 403
    # LlamaIndex chat keys and KV collections: per user, so bob sees none of alice's
    svc.post("alice", "/v1/faces/llama-chat", {"cube_id": "shared", "op": "add", "key": "alice-key",
                                               "messages": [{"role": "user", "content": "hi"}]})
    svc.post("alice", "/v1/faces/llama-kv", {"cube_id": "shared", "op": "put_all", "collection": "alice-col",
                                             "pairs": [["k", {"v": 1}]]})
    for op, extra in (("keys", {}), ("rows", {"key": "alice-key"}), ("count", {"key": "alice-key"})):
        mine = svc.post("bob", "/v1/faces/llama-chat", {"cube_id": "shared", "op": op, **extra}).json()
        unknown = svc.post("bob", "/v1/faces/llama-chat",
                           {"cube_id": "shared", "op": op, **({"key": "zz"} if extra else {})}).json()
        assert mine == unknown, op
    kv = [svc.post("bob", "/v1/faces/llama-kv", {"cube_id": "shared", "op": "get_all", "collection": c}).json()
          for c in ("alice-col", "zz")]
    assert kv[0] == kv[1]
    # sessions are per user: bob's read of "alice-diary" read his own (empty) session, so nothing was refused
    assert [m["data"]["content"] for m in svc.post("alice", "/v1/faces/chat-history", {
        "cube_id": "shared", "op": "messages", "session_id": "alice-diary"}).json()["messages"]] == ["my secret"]


# -- item 3: RemoteCube.search covered the whole cube where the same face on a MemCube filters to its user
def test_the_same_face_code_finds_the_same_memories_locally_and_remotely(svc: Svc) -> None:
    from memos_integrations.langchain import MemOSRetriever
    from memos_integrations.llama_index import MemOSRetriever as LlamaRetriever

    svc.mos.create_cube_for_user("team", owner_id="alice")
    svc.mos.share_cube_with_user("team", "bob", "write", user_id="alice")
    svc.mos.cube("team", user_id="alice").add(memory=["Alice drinks green tea.", "Alice plays the cello."])
    svc.mos.cube("team", user_id="bob").add(memory=["Bob drinks black tea.", "Bob plays the drums."])
    local, remote = svc.mos.cube("team", user_id="bob"), svc.remote("bob", "team")

    def lc(cube: Any) -> list[str]:
        return [d.metadata["memory_id"] for d in MemOSRetriever(cube=cube, user_id="bob", k=4).invoke("tea drinks")]

    def li(cube: Any) -> list[str]:
        return [n.node.metadata["memory_id"] for n in LlamaRetriever(cube, user_id="bob", similarity_top_k=4).retrieve("tea drinks")]

    assert lc(local) == lc(remote) and len(lc(local)) == 2  # bob's two memories, not alice's
    assert li(local) == li(remote) and set(li(local)) == set(lc(local))
    # get_all(user_id=...) too: that user's memories, as a MemCube lists them (paged through limit / offset)
    assert [i.id for i in remote.get_all(user_id="bob")] == [i.id for i in local.get_all(user_id="bob")]
    assert [i.id for i in remote.get_all(user_id="bob", limit=1, offset=1)] == \
        [i.id for i in local.get_all(user_id="bob", limit=1, offset=1)]
    # user_id=None says "every user's" on both sides (a shared knowledge cube): the whole cube
    assert len(MemOSRetriever(cube=remote, user_id=None, k=4).invoke("tea drinks")) == 4
    # a face may not filter as another user it is not (the key's user acts): refused, as any claim
    from memos_integrations.errors import AccessDeniedError
    with pytest.raises(AccessDeniedError):
        remote.search("tea", user_id="alice")


# -- item 4: an add split over several requests (body limit) was atomic per request: a failure in a later
# request left the earlier ones written
def _failing_client(svc: Svc, route: str, fail_at: int) -> TestClient:
    """A client of the same app whose ``fail_at``-th request to ``route`` never reaches it (the network dies)."""
    import httpx

    client = TestClient(svc.http.app, raise_server_exceptions=False)
    seen = {"n": 0}

    def hook(request: httpx.Request) -> None:
        if request.url.path == route:
            seen["n"] += 1
            if seen["n"] == fail_at:
                raise httpx.ConnectError("the network went away", request=request)

    client.event_hooks = {"request": [hook], "response": []}
    return client


def test_a_split_llama_index_add_is_all_or_nothing(svc: Svc) -> None:
    from memos_integrations.errors import BackendError

    route = "/v1/vector-stores/llama-index/add"
    nodes = [_node(i, "words " * 400 + str(i)) for i in range(24)]  # ~58 KB of JSON: 4+ requests of 16 KB
    with _failing_client(svc, route, fail_at=3) as http:
        store = LlamaStore(RemoteCube("http://testserver", svc.keys["alice"], cube_id="shared", client=http),
                           namespace="split")
        with pytest.raises(BackendError, match="nothing was written"):
            store.add(nodes)
    assert store.get_nodes() == []  # neither request 1 nor 2 left its nodes
    assert sorted(store.add(nodes)) == sorted(n.node_id for n in nodes)  # the retry writes the whole batch once
    assert len(store.get_nodes()) == 24


def test_a_split_langchain_add_is_all_or_nothing(svc: Svc) -> None:
    from memos_integrations.errors import BackendError
    from memos_integrations.langchain import MemOSVectorStore

    route = "/v1/vector-stores/langchain/add"
    texts = ["words " * 400 + str(i) for i in range(24)]
    with _failing_client(svc, route, fail_at=2) as http:
        cube = RemoteCube("http://testserver", svc.keys["alice"], cube_id="shared", client=http)
        store = MemOSVectorStore(cube, DeterministicFakeEmbedding(size=DIM), user_id="alice", kind="document")
        with pytest.raises(BackendError, match="nothing was written"):
            store.add_texts(texts, ids=[f"lc{i}" for i in range(24)])
        assert store.get_by_ids([f"lc{i}" for i in range(24)]) == []


def test_staged_parts_are_the_keys_own_and_a_gap_writes_nothing(svc: Svc) -> None:
    route = "/v1/vector-stores/langchain/add"
    common = {"cube_id": "shared", "kind": "document"}

    def part(who: str, stage: str, i: int, parts: int | None = None, text: str = "t") -> Any:
        body = {**common, "texts": [f"{text}{i}"], "ids": [f"{stage}-{i}"], "stage": stage, "part": i,
                **({"parts": parts} if parts else {})}
        return svc.post(who, route, body)

    assert part("alice", "stage-aaaa", 0).json() == {"staged": 0}
    # bob has a read share: he may not stage into alice's cube at all; carol cannot reach it (404)
    assert part("bob", "stage-aaaa", 1, 2).status_code == 403
    assert part("carol", "stage-aaaa", 1, 2).status_code == 404
    # another key naming the same stage finds none of its parts (in its own cube: a gap, nothing written)
    other = svc.post("bob", route, {"cube_id": "bob_own", "kind": "document", "texts": ["b"], "ids": ["b1"],
                                    "stage": "stage-aaaa", "part": 1, "parts": 2})
    assert other.status_code == 422 and "nothing was written" in other.json()["error"]["message"]
    assert svc.mos.cube("bob_own", user_id="bob").get_all() == []
    # a gap (part 1 of 3 never sent): the last part writes nothing, and the stage is gone
    assert part("alice", "stage-bbbb", 0).status_code == 200
    gap = part("alice", "stage-bbbb", 2, 3)
    assert gap.status_code == 422 and "nothing was written" in gap.json()["error"]["message"], gap.text
    assert part("alice", "stage-bbbb", 1).status_code == 200 and part("alice", "stage-bbbb", 2, 3).status_code == 422
    # a part sent twice; parts on a part that is not the last; part without stage
    assert part("alice", "stage-cccc", 0).status_code == 200 and part("alice", "stage-cccc", 0).status_code == 422
    assert part("alice", "stage-dddd", 0, 3).status_code == 422
    assert svc.post("alice", route, {**common, "texts": ["x"], "part": 0}).status_code == 422
    # the real thing: two parts, one commit
    assert part("alice", "stage-aaaa", 1, 2).json() == {"ids": ["stage-aaaa-0", "stage-aaaa-1"]}
    texts = {i.text for i in svc.mos.cube("shared", user_id="alice").get_all()}
    assert {"t0", "t1"} <= texts and not any(t.startswith("t") and t[1:].isdigit() and t not in ("t0", "t1")
                                             for t in texts)


# -- item 5 (attack): a client that sent its headers and part of a body, then stalled, held its connection
# and request open for ever (uvicorn has no timeout inside a request): enough of them exhaust the server
def test_a_stalled_body_is_answered_408_and_blocks_nobody(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    import httpx

    from memos_integrations.server import slow_clients
    from tests.integration.test_remote_cube import serve

    monkeypatch.setattr(slow_clients, "BODY_TIMEOUT", 0.4)
    mos = MOS(tmp_path / "home", embedder=DeterministicFakeEmbedding(size=DIM))
    keys = KeyStore.open(mos.home)
    mos.create_user("alice")
    key = keys.create("alice")[0]
    url, stop = serve(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False))  # type: ignore[misc]
    host, port = url.removeprefix("http://").split(":")
    auth = {"Authorization": f"Bearer {key}"}
    try:
        assert httpx.post(url + "/v1/memories", json={"text": "first"}, headers=auth).status_code == 201  # makes the cube
        stalled = []
        for _ in range(5):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(f"POST /v1/memories HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"text\": \"half".encode())
            stalled.append(s)
        started = time.monotonic()
        ok = httpx.post(url + "/v1/memories", json={"text": "a whole one"}, headers=auth)
        assert ok.status_code == 201 and time.monotonic() - started < slow_clients.BODY_TIMEOUT  # nobody waits
        for s in stalled:
            answer = b""
            while chunk := s.recv(4096):  # the server answers, then closes (recv returns b"")
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408") and b"InvalidInputError" in answer, answer[:200]
            s.close()
        # a trickle (a byte well within the per-piece timeout, for ever) is let go at the body's deadline
        monkeypatch.setattr(slow_clients, "BODY_DEADLINE", 0.8)
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(f"POST /v1/memories HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 400\r\n\r\n{".encode())
        answer, started = b"", time.monotonic()
        while not answer and time.monotonic() - started < 4:
            s.sendall(b" ")
            s.settimeout(0.3)
            try:
                answer = s.recv(4096)
            except TimeoutError:
                pass
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        s.close()
        listed = httpx.get(url + "/v1/memories", headers=auth).json()["items"]
        assert sorted(i["text"] for i in listed) == ["a whole one", "first"]  # nothing of the stalled writes
    finally:
        stop()
        keys.close()
        mos.close()


# -- item 5 (attack): node JSON is the client's, but llama_index runs parts of it on the service: an
# ImageDocument's image_url was fetched (SSRF, 60 s timeouts in a worker thread) and its image_path
# opened (a probe of the server's files); a node's format templates took any format spec (a 200-byte
# body became a 10 MB memory: "{value:>10000000}") and attribute access ("{key.__class__}")
def _llama_add(svc: Svc, data: dict[str, Any], cls: Any = TextNode) -> Any:
    from memos_integrations.llama_index.wire import nodes_to_json

    row = nodes_to_json([cls(text="t", id_="hostile", metadata={"a": "b"}, embedding=[1.0] * DIM)])[0]
    row["__data__"].update(data)
    return svc.post("alice", "/v1/vector-stores/llama-index/add", {"cube_id": "shared", "namespace": "hostile", "nodes": [row]})


def test_node_json_cannot_make_the_service_fetch_open_or_blow_up(svc: Svc, tmp_path: Any) -> None:
    import http.server
    import threading

    from llama_index.core.schema import ImageDocument
    from PIL import Image

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        fetched = _llama_add(svc, {"image_url": f"http://127.0.0.1:{server.server_port}/internal.png"}, ImageDocument)
        assert fetched.status_code == 422 and hits == [], (fetched.text, hits)
    finally:
        server.shutdown()
    png = tmp_path / "server-side.png"
    Image.new("RGB", (2, 2)).save(png)
    opened = _llama_add(svc, {"image_path": str(png)}, ImageDocument)
    missing = _llama_add(svc, {"image_path": str(tmp_path / "nothing.png")}, ImageDocument)
    assert opened.status_code == missing.status_code == 422  # the same answer: no probe of the server's files
    assert opened.json()["error"]["message"] == missing.json()["error"]["message"]
    for template in ({"metadata_template": "{key}: {value:>10000000}"}, {"metadata_template": "{key.__class__}"},
                     {"text_template": "{metadata_str}{content!r:>99999}"}, {"text_template": "{0}"}):
        answer = _llama_add(svc, template)
        assert answer.status_code == 422 and "template" in answer.json()["error"]["message"], (template, answer.text)
    fine = _llama_add(svc, {"metadata_template": "{key} = {value}", "text_template": "{metadata_str}\n--\n{content}"})
    assert fine.status_code == 200, fine.text


# -- item 5 (attack): a LlamaIndex chat message's image/audio/video block with a ``path`` was read on the
# service while the message was validated: "ok" for a file that exists, 422 for one that does not (a probe
# of the server's files; a huge file read whole into memory)
def test_chat_message_blocks_cannot_name_the_servers_files(svc: Svc, tmp_path: Any) -> None:
    there = tmp_path / "there.txt"
    there.write_text("server-side file")
    answers = []
    for path in (str(there), str(tmp_path / "not-there.txt")):
        for block in ("image", "audio", "video", "document"):
            r = svc.post("alice", "/v1/faces/llama-chat", {"cube_id": "shared", "op": "add", "key": "probe",
                                                           "messages": [{"role": "user", "blocks": [
                                                               {"block_type": block, "path": path}]}]})
            answers.append((r.status_code, r.json()["error"]["message"] if r.status_code != 200 else ""))
    assert {a[0] for a in answers} == {422} and len({a[1] for a in answers}) == 1, answers
