"""The service's known gaps (issue 13, session 6): each test failed on the code it was written against.

Retried staged writes, staging bounds per user and for the service, id bounds, squatting of LlamaIndex
node keys by a user with a write share, and ``RemoteCube.get_all(user_id=)`` paging on the service.
"""

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
from memos_integrations.remote import RemoteCube  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.storage import staged_writes  # noqa: E402
from tests.integration.service_kit import DIM, LC, LI, Svc  # noqa: E402


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    """alice owns ``a1`` (two keys: ``alice``, ``alice2``); bob has a write share on it."""
    home = tmp_path_factory.mktemp("s6")
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=DIM))
    keys = KeyStore.open(mos.home)
    for user in ("alice", "bob", "carol"):
        mos.create_user(user)
    mos.create_cube_for_user("a1", owner_id="alice")
    mos.share_cube_with_user("a1", "bob", "write", user_id="alice")
    issued = {u: keys.create(u)[0] for u in ("alice", "bob", "carol")}
    issued["alice2"] = keys.create("alice")[0]
    bounds = pytest.MonkeyPatch()  # small staging bounds, read when the app is made
    bounds.setattr(staged_writes, "MAX_BYTES", 3000)
    bounds.setattr(staged_writes, "MAX_USER_BYTES", 4000, raising=False)
    bounds.setattr(staged_writes, "MAX_TOTAL_BYTES", 6000, raising=False)
    app = create_app(mos, keys=keys, limits=Limits(rate=0, max_body_bytes=16 * 1024), mcp=False)
    bounds.undo()
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Svc(mos, http, issued)
    keys.close()
    mos.close()


def _node(**kw: Any) -> dict[str, Any]:
    from memos_integrations.llama_index.wire import nodes_to_json

    return dict(nodes_to_json([TextNode(**kw)])[0])


def _versions(svc: Svc, item_id: str) -> int:
    return len(svc.mos.cube("a1", user_id="alice").history(item_id))


# -- 1b: the last part of a split write sent again (its answer was lost) said "nothing was written"
def test_a_retried_last_part_answers_the_write_it_made(svc: Svc) -> None:
    common = {"cube_id": "a1", "kind": "document"}
    assert svc.post("alice", LC, {**common, "texts": ["r0"], "ids": ["retry-0"], "stage": "retry-last-1",
                                  "part": 0}).json() == {"staged": 0}
    last = {**common, "texts": ["r1"], "ids": ["retry-1"], "stage": "retry-last-1", "part": 1, "parts": 2}
    first = svc.post("alice", LC, last)
    again = svc.post("alice", LC, last)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json() == {"ids": ["retry-0", "retry-1"]}
    assert _versions(svc, "retry-0") == _versions(svc, "retry-1") == 1  # written once
    # the same stage id for another write (another route, or other rows) is refused, never answered as written
    for other_write in ({**last, "texts": ["other"]}, {"cube_id": "a1", "stage": "retry-last-1", "part": 1, "parts": 2,
                                                       "nodes": []}):
        reused = svc.post("alice", LI if "nodes" in other_write else LC, other_write)
        assert reused.status_code == 422 and "new stage id" in reused.json()["error"]["message"], reused.text
    # another key of the same user naming that stage is another write: it learns nothing of this one
    other = svc.post("alice2", LC, last)
    assert other.status_code == 422 and "nothing was written" in other.json()["error"]["message"]


# -- 1c: a one-part staged write sent twice was written twice (a second version)
def test_a_one_part_staged_write_is_retry_safe(svc: Svc) -> None:
    body = {"cube_id": "a1", "nodes": [_node(id_="once", text="written once",
                                                embedding=[1.0] * DIM)],
            "stage": "one-part-write", "part": 0, "parts": 1}
    answers = [svc.post("alice", LI, body) for _ in range(2)]
    assert [a.json() for a in answers] == [{"ids": ["once"]}] * 2, answers[1].text
    [item] = [i for i in svc.mos.cube("a1", user_id="alice").get_all() if i.text == "written once"]
    assert _versions(svc, item.id) == 1


def test_the_client_sends_a_lost_last_request_again_and_it_is_written_once(svc: Svc) -> None:
    import httpx

    from memos_integrations.errors import BackendError
    from memos_integrations.langchain import MemOSVectorStore

    client = TestClient(svc.http.app, raise_server_exceptions=False)
    calls = {"n": 0}

    def lose_first_answer(response: httpx.Response) -> None:  # the service wrote it; the answer never came
        if response.request.url.path == LC:
            calls["n"] += 1
            if calls["n"] in (0, 1):
                raise httpx.ReadError("the connection dropped", request=response.request)

    client.event_hooks = {"request": [], "response": [lose_first_answer]}
    with client:
        store = MemOSVectorStore(RemoteCube("http://testserver", svc.keys["alice"], cube_id="a1", client=client),
                                 user_id="alice")
        assert store.add_texts(["lost answer"], ids=["lost-1"]) == ["lost-1"]
        assert calls["n"] == 2 and _versions(svc, "lost-1") == 1
        calls["n"] = -1  # both answers lost: the error says the write may have happened, never "nothing was written"
        with pytest.raises(BackendError, match="may or may not have written") as lost:
            store.add_texts(["lost twice"], ids=["lost-2"])
        assert "nothing was written" not in str(lost.value) and _versions(svc, "lost-2") == 1


# -- 1a: the 64 MiB bound was per key: a user's second key, or many users, staged without bound
def test_staging_is_bounded_per_user_and_for_the_whole_service(svc: Svc) -> None:
    def stage(who: str, name: str, size: int) -> Any:
        return svc.post(who, LC, {"cube_id": "a1", "kind": "document", "texts": ["x" * size], "stage": name,
                                  "part": 0})

    assert stage("alice", "bound-alice-1", 2000).status_code == 200
    mine = stage("alice2", "bound-alice-2", 2000)  # alice's other key: her bound counts both
    assert mine.status_code == 413 and "this user's keys" in mine.json()["error"]["message"], mine.text
    assert stage("bob", "bound-bob-1", 2000).status_code == 200
    assert stage("carol", "bound-carol-1", 2000).status_code in (403, 404)  # no access: nothing staged
    full = stage("bob", "bound-bob-2", 2500)
    assert full.status_code == 413  # bob's own key bound (3000) first
    for who in ("alice", "bob"):  # abandon them (a mismatched last part drops the stage)
        svc.post(who, LC, {"cube_id": "a1", "kind": "document", "texts": [], "stage": f"bound-{who}-1", "part": 0,
                           "parts": 2})
    # the service-wide bound (6000): every user's parts together
    assert stage("alice", "bound-alice-3", 2000).status_code == 200
    assert stage("bob", "bound-bob-3", 2500).status_code == 200
    busy = stage("alice2", "bound-alice-4", 1200)
    assert busy.status_code == 429 and "every user" in busy.json()["error"]["message"], busy.text
    assert busy.headers.get("retry-after")
    for who in ("alice", "bob"):
        svc.post(who, LC, {"cube_id": "a1", "kind": "document", "texts": [], "stage": f"bound-{who}-3", "part": 0,
                           "parts": 2})


# -- 3: ids had no bound (a 100 KB id was a 100 KB key in every index)
@pytest.mark.parametrize("route,body", [
    (LC, {"texts": ["t"], "ids": ["i" * 513]}),
    ("/v1/vector-stores/langchain/get", {"ids": ["i" * 513]}),
    ("/v1/vector-stores/langchain/delete", {"ids": ["i" * 513]}),
    ("/v1/vector-stores/langchain/check", {"ids": ["i" * 513]}),
    (LI, {"nodes": [_node(id_="n" * 513, text="t", embedding=[1.0] * DIM)]}),
    ("/v1/vector-stores/llama-index/get-nodes", {"node_ids": ["n" * 513]}),
    ("/v1/vector-stores/llama-index/delete", {"ref_doc_id": "d" * 513}),
    ("/v1/faces/llama-chat", {"op": "count", "key": "k" * 513}),
    ("/v1/faces/llama-kv", {"op": "put_all", "pairs": [["k" * 513, {"v": 1}]]}),
])
def test_ids_over_512_characters_are_refused(svc: Svc, route: str, body: dict[str, Any]) -> None:
    answer = svc.post("alice", route, {"cube_id": "a1", **body})
    assert answer.status_code == 422, answer.text
    assert "512" in answer.json()["error"]["message"]


# -- 3: bob (a write share) wrote a LangChain document under the item id alice's LlamaIndex node would get
# (li:<digest of alice's scope>:<node id>, computable by anyone): alice's later add of that node was refused
def test_a_writer_cannot_squat_another_users_node_keys(svc: Svc) -> None:
    from memos_integrations.llama_index._nodes import ScopedKeys

    keys = ScopedKeys("vector", "default", "alice")
    written = _node(id_="written-node", text="alice's first node", embedding=[1.0] * DIM)
    assert svc.post("alice", LI, {"cube_id": "a1", "nodes": [written]}).json() == {"ids": ["written-node"]}

    def squat(item_id: str) -> Any:
        answer = svc.post("bob", LC, {"cube_id": "a1", "texts": ["squatted"], "ids": [item_id]})
        assert answer.status_code == 422, answer.text
        return answer.json()["error"]["type"], answer.json()["error"]["message"].replace(item_id, "<id>")

    # refused whether or not alice's node is there, with one answer: bob learns nothing of what she holds
    assert squat(keys.item_id("future-node")) == squat(keys.item_id("written-node"))
    assert "nothing was written" in squat(keys.item_id("future-node"))[1]
    node = _node(id_="future-node", text="alice's node", embedding=[1.0] * DIM)
    assert svc.post("alice", LI, {"cube_id": "a1", "nodes": [node]}).json() == {"ids": ["future-node"]}


# -- 4: get_all(user_id=) paged the whole cube and filtered on the client: every page carried the other
# users' memories, and a page of alice's could come back short
def test_get_all_of_one_user_is_filtered_on_the_service(svc: Svc) -> None:
    for n in range(3):
        svc.mos.add(memory_content=f"alice list {n}", user_id="alice", mem_cube_id="a1")
        svc.mos.add(memory_content=f"bob list {n}", user_id="bob", mem_cube_id="a1")
    page = svc.post("bob", "/v1/faces/memories", {"cube_id": "a1", "user_id": "bob", "limit": 2})
    assert page.status_code == 200, page.text
    assert [i["user_id"] for i in page.json()["items"]] == ["bob", "bob"] and page.json()["more"] is True
    local = svc.mos.cube("a1", user_id="bob").get_all(user_id="bob")
    remote = svc.remote("bob")
    assert [i.id for i in remote.get_all(user_id="bob")] == [i.id for i in local]
    assert [i.id for i in remote.get_all(user_id="bob", limit=2, offset=1)] == [i.id for i in local[1:3]]
    refused = svc.post("bob", "/v1/faces/memories", {"cube_id": "a1", "user_id": "alice"})
    assert refused.status_code == 403  # another user's list: the key's user acts (audited)


# -- 2: bob (a write share) added to a LangChain session alice uses and got a 403 where a new session name
# is written: he learned the name was taken, and by writing first he could take a name from her
def test_a_session_name_another_user_holds_answers_as_a_new_one(svc: Svc) -> None:
    def chat(who: str, op: str, session: str, text: str | None = None) -> Any:
        body = {"cube_id": "a1", "op": op, "session_id": session,
                **({"messages": [{"type": "human", "data": {"content": text, "type": "human"}}]} if text else {})}
        answer = svc.post(who, "/v1/faces/chat-history", body)
        return answer.status_code, answer.json()

    assert chat("alice", "add", "diary", "alice's secret")[0] == 200
    assert chat("bob", "add", "diary", "bob's words") == chat("bob", "add", "fresh-name", "bob's words")
    assert chat("bob", "clear", "diary") == chat("bob", "clear", "fresh-name")
    assert chat("bob", "add", "alice-next", "bob took it first")[0] == 200
    assert chat("alice", "add", "alice-next", "alice's next")[0] == 200  # not taken from her
    for session, mine in (("diary", ["alice's secret"]), ("alice-next", ["alice's next"])):
        assert [m["data"]["content"] for m in chat("alice", "messages", session)[1]["messages"]] == mine
