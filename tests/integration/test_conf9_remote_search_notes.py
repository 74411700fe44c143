"""Issue 14 (ninth session): a RemoteCube face page is one request, its conflict notes included.

The search routes the faces use (``POST /v1/faces/search`` with a ``user_id``, ``POST /v1/memories/search``
without) answer, when asked with ``"conflicts": true``, each hit's flagged-conflict notes in the same
response (``"conflicts": {id: [short texts]}``), computed as ``POST /v1/faces/conflicts`` computes them; the
field is absent unless asked. A RemoteCube asks for them with every search and keeps them, so
``conflict_notes`` on a page it just searched costs no request (any other page still asks
``/v1/faces/conflicts``). The live service is the one of ``test_remote_store_faces``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage

from memos_integrations import remote as remote_module
from memos_integrations.items import Edge, MemoryItem
from memos_integrations.langchain import MemOSRetriever
from memos_integrations.langchain.middleware import MemOSMemoryMiddleware
from memos_integrations.langchain.tools import SearchMemoryTool
from memos_integrations.llama_index import MemOSRetriever as LlamaRetriever
from memos_integrations.llama_index.memory_block import MemOSMemoryBlock
from memos_integrations.organize import organize
from memos_integrations.organize.links import conflict_notes
from memos_integrations.remote import RemoteCube
from memos_integrations.storage.graph import CONFLICT
from tests.integration.test_remote_store_faces import Service

LISBON, PORTO = "I live in Lisbon.", "I live in Porto now."
ASK = "Where do I live?"
NOTES = "/v1/faces/conflicts"


class Disputed:
    """alice's two disagreeing memories organised into a flagged conflict; bob's own pair in his cube."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        with svc.cube("alice") as alice:
            self.old = alice.add(memory=LISBON, user_id="alice", session_id="s1")[0]
            self.new = alice.add(memory=PORTO, user_id="alice", session_id="s2")[0]
            alice.add(memory="My favourite tea is genmaicha.", user_id="alice", session_id="s3")
        with svc.cube("bob") as bob:
            self.bob = bob.add(memory="I live in Madrid.", user_id="bob", session_id="s1")[0]
            bob.add(memory="I live in Faro now.", user_id="bob", session_id="s2")
        for cube_id in ("alice_cube", "bob_cube"):
            organize(svc.mos._cube(cube_id), reader=None)

    def post(self, who: str, route: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.svc.url + route, json={"cube_id": f"{who}_cube", **body},
                          headers={"Authorization": f"Bearer {self.svc.key[who]}"})


@pytest.fixture(scope="module")
def disputed(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Disputed]:
    svc = Service(tmp_path_factory.mktemp("conf9") / "home", embedder)
    try:
        yield Disputed(svc)
    finally:
        svc.close()


def counting(svc: Service, who: str, cube_id: str | None = None) -> tuple[RemoteCube, list[str]]:
    """A RemoteCube whose requests are counted by path."""
    paths: list[str] = []
    client = httpx.Client(timeout=30, event_hooks={"request": [lambda r: paths.append(r.url.path)]})
    return RemoteCube(svc.url, svc.key[who], cube_id=cube_id or f"{who}_cube", client=client), paths


def test_every_face_page_on_a_remote_cube_is_one_request_with_the_embedded_cubes_notes(disputed: Disputed) -> None:
    svc = disputed.svc
    local = svc.mos.cube("alice_cube", user_id="alice")
    faces: dict[str, Any] = {
        "langchain retriever": lambda c: {d.page_content: d.metadata.get("conflicts")
                                          for d in MemOSRetriever(cube=c, user_id="alice", k=5).invoke(ASK)},
        "middleware": lambda c: MemOSMemoryMiddleware(c, user_id="alice", k=5).recall(
            "alice", HumanMessage(ASK, id="m1"))["text"],
        "search tool": lambda c: SearchMemoryTool(cube=c, user_id="alice").invoke({"query": ASK, "k": 5}),
        "llama_index block": lambda c: MemOSMemoryBlock(c, user_id="alice", top_k=5)._search(ASK, None),
        "llama_index retriever": lambda c: {h.node.metadata["memory_id"]: h.node.metadata.get("conflicts")
                                            for h in LlamaRetriever(c, user_id="alice", similarity_top_k=5).retrieve(ASK)},
    }
    for name, face in faces.items():
        want = face(local)
        assert "Lisbon" in str(want) and "Porto" in str(want), name
        remote, paths = counting(svc, "alice")
        with remote:
            assert face(remote) == want, name
        assert len(paths) == 1 and NOTES not in paths, (name, paths)  # the search, nothing else


def test_the_search_field_is_absent_unless_asked_and_equals_the_conflicts_route(disputed: Disputed) -> None:
    for route, extra in (("/v1/faces/search", {"user_id": "alice"}), ("/v1/memories/search", {})):
        plain = disputed.post("alice", route, {"query": ASK, "k": 5, **extra})
        assert plain.status_code == 200 and "conflicts" not in plain.json(), route
        asked = disputed.post("alice", route, {"query": ASK, "k": 5, "conflicts": True, **extra}).json()
        ids = [h["item"]["id"] for h in asked["hits"]]
        assert [h["item"]["id"] for h in plain.json()["hits"]] == ids  # the same hits
        again = disputed.post("alice", NOTES, {"ids": ids}).json()["conflicts"]
        assert asked["conflicts"] == again == {disputed.old.id: [PORTO], disputed.new.id: [LISBON]}, route
        off = disputed.post("alice", route, {"query": ASK, "k": 5, "conflicts": False, **extra}).json()
        assert "conflicts" not in off
    bad = disputed.post("alice", "/v1/faces/search", {"query": ASK, "conflicts": "yes please"})
    assert bad.status_code == 422 and bad.json()["error"]["type"].endswith("Error")


def test_another_user_never_gets_the_first_users_conflict_texts(disputed: Disputed) -> None:
    svc = disputed.svc
    for route, extra in (("/v1/faces/search", {"user_id": "bob"}), ("/v1/memories/search", {})):
        mine = disputed.post("bob", route, {"query": ASK, "k": 5, "conflicts": True, **extra})
        assert mine.status_code == 200 and "Faro" in str(mine.json()["conflicts"])
        assert "Lisbon" not in mine.text and "Porto" not in mine.text
        theirs = disputed.post("bob", route, {"query": ASK, "k": 5, "conflicts": True, "cube_id": "alice_cube", **extra})
        assert theirs.status_code == 404 and "Lisbon" not in theirs.text and "Porto" not in theirs.text
    # acting as alice with bob's key: refused, no notes
    forged = disputed.post("bob", "/v1/faces/search", {"query": ASK, "conflicts": True, "user_id": "alice"})
    assert forged.status_code == 403 and "Lisbon" not in forged.text
    # a link to another user's memory in a shared cube is never a note, in the search answer as on /conflicts
    with svc.cube("alice", "shared") as alice, svc.cube("bob", "shared") as bob:
        hers = alice.add(memory="I work at the harbour.", user_id="alice")[0]
        his = bob.add(memory="I work at the bakery.", user_id="bob")[0]
        svc.mos._cube("shared").graph.add_edges([Edge(his.id, hers.id, CONFLICT, 1.0, {"status": "flagged"})])
        for who in ("alice", "bob"):
            for route in ("/v1/faces/search", "/v1/memories/search"):
                body = {"query": "Where do I work?", "k": 5, "conflicts": True, "cube_id": "shared"}
                answer = disputed.post(who, route, {**body, **({"user_id": who} if "faces" in route else {})}).json()
                assert answer["conflicts"] == {}, (who, route)
        assert conflict_notes(bob, [h.item for h in bob.search("Where do I work?", user_id="bob")]) == {}


def test_other_pages_still_ask_the_conflicts_route_once(disputed: Disputed, monkeypatch: Any) -> None:
    svc = disputed.svc
    remote, paths = counting(svc, "alice")
    with remote:
        hits = remote.search(ASK, user_id="alice", top_k=5)
        assert conflict_notes(remote, [h.item for h in hits]) == {disputed.old.id: [PORTO], disputed.new.id: [LISBON]}
        assert paths == ["/v1/faces/search"]
        got = remote.get(disputed.new.id)  # one of the page just searched: its notes came with the search
        assert conflict_notes(remote, [got]) == {disputed.new.id: [LISBON]} and paths[-1] != NOTES
        other = [got, MemoryItem(text="y", id="nope", user_id="alice")]  # not a page it searched: one request
        assert conflict_notes(remote, other) == {disputed.new.id: [LISBON]} and paths[-1] == NOTES
        monkeypatch.setattr(remote_module, "NOTES_FRESH_S", 0.0)  # the search's notes are too old: asked again
        assert conflict_notes(remote, [got]) == {disputed.new.id: [LISBON]} and paths.count(NOTES) == 2
        monkeypatch.undo()
        hits = remote.search(ASK, user_id="alice", top_k=5)
        remote.update(disputed.old.id, metadata={"checked": True})  # a write: the kept notes may be stale
        assert conflict_notes(remote, [h.item for h in hits])[disputed.new.id] == [LISBON]
        assert paths[-1] == NOTES and paths.count(NOTES) == 3
        before = len(paths)
        assert conflict_notes(remote, [h.item for h in hits], chars=10) == {disputed.new.id: ["I live in…"],
                                                                             disputed.old.id: ["I live in…"]}
        assert len(paths) == before + 1  # other lengths than the search's notes: asked again
        whole = remote.search(ASK, top_k=5)  # no user_id: /v1/memories/search, notes carried as well
        assert conflict_notes(remote, [h.item for h in whole])[disputed.new.id] == [LISBON]
        assert paths[-1] == "/v1/memories/search"


class _OldService(httpx.HTTPTransport):
    """A service from before the field: its strict models refuse ``conflicts`` as an unknown field."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__()
        self.paths = paths

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path.endswith("/search") and b'"conflicts"' in request.read():
            return httpx.Response(422, json={"error": {"type": "InvalidTypeError", "message": (
                "conflicts: Extra inputs are not permitted; see /openapi.json for the request shape")}})
        return super().handle_request(request)


def test_a_service_without_the_field_still_answers_a_new_client(disputed: Disputed) -> None:
    svc = disputed.svc
    paths: list[str] = []
    with RemoteCube(svc.url, svc.key["alice"], cube_id="alice_cube", client=httpx.Client(transport=_OldService(paths))) as old:
        docs = MemOSRetriever(cube=old, user_id="alice", k=5).invoke(ASK)
        assert {d.page_content: d.metadata.get("conflicts") for d in docs}[PORTO] == [LISBON]
        assert paths == ["/v1/faces/search", "/v1/faces/search", NOTES]  # refused once, then the old way
        MemOSRetriever(cube=old, user_id="alice", k=5).invoke(ASK)
        assert paths[3:] == ["/v1/faces/search", NOTES]  # remembered: not refused again


def test_the_langgraph_recall_node_on_a_remote_store_marks_the_conflict(disputed: Disputed) -> None:
    from memos_integrations.langgraph import MemOSStore, make_recall_node

    svc = disputed.svc
    remote, paths = counting(svc, "alice", "shared")
    with remote:
        store = MemOSStore(remote, index=True)
        store.put(("users", "alice", "memories"), "home-1", {"text": "I live in Braga."})
        store.put(("users", "alice", "memories"), "home-2", {"text": "I live in Faro now."})
        organize(svc.mos._cube("shared"), reader=None)
        lines = make_recall_node(store, top_k=5)({"messages": [("user", ASK)]}, {"configurable": {"user_id": "alice"}})
    assert 'I live in Faro now. (conflicts with: "I live in Braga.")' in lines["memories"]
    assert not any("bakery" in line or "Madrid" in line for line in lines["memories"])
