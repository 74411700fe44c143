"""Issue 14 (eighth session): a flagged conflict reaches the model on a RemoteCube too.

``organize.links.conflict_notes(cube, items)`` asks a cube that has its own ``conflict_notes`` (a RemoteCube:
``POST /v1/faces/conflicts``, one round trip per page) instead of reading a graph it does not have. The
service re-reads each id in the caller's cube and computes the notes there, so a caller never gets notes
for an item it cannot read, nor another user's memory as a note. The live service is the one of
``test_remote_store_faces`` (alice owns ``alice_cube`` and ``shared``, bob ``bob_cube`` and a write share
of ``shared``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage

from memos_integrations.items import Edge, MemoryItem
from memos_integrations.langchain import MemOSRetriever
from memos_integrations.langchain.middleware import MemOSMemoryMiddleware
from memos_integrations.langchain.tools import SearchMemoryTool
from memos_integrations.llama_index.memory_block import MemOSMemoryBlock
from memos_integrations.organize import organize
from memos_integrations.organize.links import conflict_notes
from memos_integrations.remote import RemoteCube
from memos_integrations.storage.graph import CONFLICT
from tests.integration.test_remote_store_faces import Service

ROUTE = "/v1/faces/conflicts"
LISBON, PORTO = "I live in Lisbon.", "I live in Porto now."


class Disputed:
    """The service with alice's two disagreeing memories organised into a flagged conflict, bob's own one."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        with svc.cube("alice") as alice:
            self.old = alice.add(memory=LISBON, user_id="alice", session_id="s1")[0]
            self.new = alice.add(memory=PORTO, user_id="alice", session_id="s2")[0]
        with svc.cube("bob") as bob:
            self.bob = bob.add(memory="I live in Madrid.", user_id="bob", session_id="s1")[0]
            bob.add(memory="I live in Faro now.", user_id="bob", session_id="s2")
        for cube_id in ("alice_cube", "bob_cube"):
            organize(svc.mos._cube(cube_id), reader=None)

    def post(self, who: str, body: dict[str, Any]) -> httpx.Response:
        """``POST /v1/faces/conflicts`` with ``who``'s key, on their own cube unless the body names one."""
        body = {"cube_id": f"{who}_cube", **body}
        return httpx.post(self.svc.url + ROUTE, json=body, headers={"Authorization": f"Bearer {self.svc.key[who]}"})


@pytest.fixture(scope="module")
def disputed(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Disputed]:
    svc = Service(tmp_path_factory.mktemp("rconf") / "home", embedder)
    try:
        yield Disputed(svc)
    finally:
        svc.close()


def counting(svc: Service, who: str, cube_id: str | None = None) -> tuple[RemoteCube, list[str]]:
    """A RemoteCube whose requests are counted by path."""
    paths: list[str] = []
    client = httpx.Client(timeout=30, event_hooks={"request": [lambda r: paths.append(r.url.path)]})
    return RemoteCube(svc.url, svc.key[who], cube_id=cube_id or f"{who}_cube", client=client), paths


def test_the_retriever_on_a_remote_cube_marks_conflicts_as_the_embedded_cube_does(disputed: Disputed) -> None:
    svc = disputed.svc
    local = MemOSRetriever(cube=svc.mos.cube("alice_cube", user_id="alice"), user_id="alice", k=5)
    want = {d.page_content: d.metadata.get("conflicts") for d in local.invoke("Where do I live?")}
    assert want[PORTO] == [LISBON] and want[LISBON] == [PORTO]
    remote, paths = counting(svc, "alice")
    with remote:
        docs = MemOSRetriever(cube=remote, user_id="alice", k=5).invoke("Where do I live?")
    assert {d.page_content: d.metadata.get("conflicts") for d in docs} == want
    assert paths == ["/v1/faces/search"]  # one round trip for the page: the notes came with the search (conf9)


def test_the_llama_index_block_middleware_and_tool_carry_the_note(disputed: Disputed) -> None:
    with disputed.svc.cube("alice") as remote:
        text = MemOSMemoryBlock(remote, user_id="alice", top_k=5)._search("Where do I live?", None)
        assert f'- {PORTO} (conflicts with: "{LISBON}")' in text.splitlines()
        recalled = MemOSMemoryMiddleware(remote, user_id="alice", k=5).recall("alice", HumanMessage("Where do I live?", id="m1"))
        assert f'- {LISBON} (conflicts with: "{PORTO}")' in recalled["text"].splitlines()
        out = SearchMemoryTool(cube=remote, user_id="alice").invoke({"query": "Where do I live?", "k": 5})
        assert f'[{disputed.new.id}] (fact) {PORTO} (conflicts with: "{LISBON}")' in out
        # the async path of the block runs the same calls in a thread
        from llama_index.core.base.llms.types import ChatMessage

        assert f'(conflicts with: "{LISBON}")' in asyncio.run(MemOSMemoryBlock(remote, user_id="alice", top_k=5).aget(
            [ChatMessage(role="user", content="Where do I live?")]))


def test_no_items_no_request_and_a_failure_is_no_notes(disputed: Disputed) -> None:
    svc = disputed.svc
    remote, paths = counting(svc, "alice")
    with remote:
        assert conflict_notes(remote, []) == {} and paths == []
        item = remote.get(disputed.new.id)
        assert conflict_notes(remote, [item]) == {disputed.new.id: [LISBON]}
        assert conflict_notes(remote, [item], chars=10) == {disputed.new.id: ["I live in…"]}
    with RemoteCube(svc.url, "not-a-key", cube_id="alice_cube") as stranger:
        assert conflict_notes(stranger, [item]) == {}  # refused: a context never fails for want of its notes
    with RemoteCube("http://127.0.0.1:9", svc.key["alice"], timeout=2) as gone:
        assert conflict_notes(gone, [item]) == {}


def test_another_user_never_gets_the_first_users_conflict_texts(disputed: Disputed) -> None:
    svc, ids = disputed.svc, [disputed.old.id, disputed.new.id]
    # alice asks for her own: the notes; bob names her ids in his own cube: nothing there, no notes
    assert disputed.post("alice", {"ids": ids}).json()["conflicts"] == {disputed.old.id: [PORTO], disputed.new.id: [LISBON]}
    mine = disputed.post("bob", {"ids": ids})
    assert mine.status_code == 200 and mine.json() == {"conflicts": {}}
    assert httpx.post(svc.url + ROUTE, json={"ids": ids}, headers={"Authorization": f"Bearer {svc.key['bob']}"}).json() \
        == {"conflicts": {}}  # no cube named: his default (his only cube)
    # bob names her cube: the service's usual 404 (the same for no such cube), audited in the key log
    theirs = disputed.post("bob", {"ids": ids, "cube_id": "alice_cube"})
    assert theirs.status_code == 404 and theirs.json()["error"]["type"] == "CubeNotFoundError"
    assert "Lisbon" not in theirs.text and "Porto" not in theirs.text
    none = disputed.post("bob", {"ids": ids, "cube_id": "no_such_cube"})
    assert none.status_code == 404 and none.json()["error"]["message"].replace("no_such_cube", "alice_cube") == \
        theirs.json()["error"]["message"]
    refusals = [e for e in svc.keys.audit_log(50, principal="bob") if e.get("target") == "alice_cube"]
    assert refusals and not refusals[0]["allowed"]
    # acting as alice with bob's key: refused (audited), no notes
    assert disputed.post("bob", {"ids": ids, "user_id": "alice"}).status_code == 403
    # bob's faces on his own cube see his own conflict, never hers
    with svc.cube("bob") as bob:
        docs = MemOSRetriever(cube=bob, user_id="bob", k=5).invoke("Where do I live?")
        shown = str([d.metadata.get("conflicts") for d in docs])
        assert "Madrid" in shown and "Lisbon" not in shown and "Porto" not in shown
        assert conflict_notes(bob, [MemoryItem(text="x", id=i, user_id="alice") for i in ids]) == {}


def test_in_a_shared_cube_a_link_to_another_users_memory_is_never_a_note(disputed: Disputed) -> None:
    svc = disputed.svc
    with svc.cube("alice", "shared") as alice, svc.cube("bob", "shared") as bob:
        hers = alice.add(memory="I work at the harbour.", user_id="alice")[0]
        his = bob.add(memory="I work at the bakery.", user_id="bob")[0]
        svc.mos._cube("shared").graph.add_edges([Edge(his.id, hers.id, CONFLICT, 1.0, {"status": "flagged"})])
        assert conflict_notes(bob, [bob.get(his.id)]) == {}
        assert conflict_notes(alice, [alice.get(hers.id)]) == {}
        # the client's copy of an item cannot claim another owner: the service reads the item itself
        forged = MemoryItem(text="x", id=his.id, user_id="alice")
        assert conflict_notes(bob, [forged]) == {}


@pytest.mark.parametrize("body", [
    {"ids": "not-a-list"}, {"ids": [1, 2]}, {"ids": [""]}, {"ids": ["x" * 5000]}, {"ids": ["a"], "chars": 0},
    {"ids": ["a"], "chars": 10**9}, {"ids": ["a"], "extra": True}, {}, {"ids": [None]},
])
def test_garbage_is_a_clear_422(disputed: Disputed, body: Any) -> None:
    answer = disputed.post("alice", body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["type"].endswith("Error")


def test_the_work_is_bounded_and_odd_ids_are_simply_no_notes(disputed: Disputed) -> None:
    max_k = 100  # Limits() default, the search's k bound
    many = disputed.post("alice", {"ids": [f"id{i}" for i in range(max_k + 1)]})
    assert many.status_code == 422 and str(max_k) in many.json()["error"]["message"]
    assert disputed.post("alice", {"ids": [f"id{i}" for i in range(max_k)]}).json() == {"conflicts": {}}
    assert disputed.post("alice", {"ids": []}).json() == {"conflicts": {}}
    assert disputed.post("alice", {"ids": ["nope", "../x", "nope"]}).json() == {"conflicts": {}}
    dup = disputed.post("alice", {"ids": [disputed.new.id, disputed.new.id]}).json()
    assert dup == {"conflicts": {disputed.new.id: [LISBON]}}
