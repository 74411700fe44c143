"""The namespaced faces on a RemoteCube: LangGraph's MemOSStore, LangChain's chat history, LlamaIndex's chat
and KV stores, each face's own tests run once more against the real service on loopback.

The service is the real app (``create_app``) on uvicorn in a thread of this process (it shares the
session's MiniLM embedder); the faces get a :class:`RemoteCube` and the same code as locally. The face
scripts (side by side with LangGraph's ``InMemoryStore`` and LlamaIndex's ``SimpleChatStore`` /
``SimpleDocumentStore``) are the unit tests' own, imported from them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("langgraph.store.memory")
pytest.importorskip("llama_index.core")

import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage  # noqa: E402
from langgraph.store.base import InvalidNamespaceError, PutOp  # noqa: E402
from langgraph.store.memory import InMemoryStore  # noqa: E402
from llama_index.core.llms import ChatMessage  # noqa: E402
from llama_index.core.storage.chat_store import SimpleChatStore  # noqa: E402
from llama_index.core.storage.chat_store.base_db import MessageStatus  # noqa: E402
from llama_index.core.storage.docstore import SimpleDocumentStore  # noqa: E402
from llama_index.core.storage.index_store import SimpleIndexStore  # noqa: E402

from memos_integrations import MOS  # noqa: E402
from memos_integrations.errors import (  # noqa: E402
    AccessDeniedError,
    CubeNotFoundError,
    InvalidInputError,
    InvalidTypeError,
    OversizedInputError,
)
from memos_integrations.langchain import MemOSChatMessageHistory  # noqa: E402
from memos_integrations.langgraph import MemOSStore  # noqa: E402
from memos_integrations.langgraph.access import NamespacePolicy  # noqa: E402
from memos_integrations.llama_index import (  # noqa: E402
    MemOSAsyncChatStore,
    MemOSChatStore,
    MemOSDocumentStore,
    MemOSIndexStore,
    MemOSKVStore,
)
from memos_integrations.remote import RemoteCube  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from tests.integration.test_remote_cube import serve  # noqa: E402
from tests.unit.test_langgraph_store import _apply, _prune, delete_op, get_op, list_op, put_op, search_op  # noqa: E402
from tests.unit.test_llama_index_memory import exercise_chat_store  # noqa: E402
from tests.unit.test_llama_index_storage import exercise_docstore, exercise_index_store  # noqa: E402


class Service:
    """The real app over a MOS home: alice owns ``alice_cube`` and ``shared`` (bob may write it), bob ``bob_cube``."""

    def __init__(self, home: Path, embedder: Any) -> None:
        self.home, self.embedder = home, embedder
        self.mos = MOS(home, embedder=embedder)
        self.keys = KeyStore.open(home / "mos.db")
        for user in ("alice", "bob"):
            self.mos.create_user(user)
            self.mos.create_cube_for_user(f"{user}_cube", owner_id=user)
        self.mos.create_cube_for_user("shared", owner_id="alice")
        self.mos.create_cube_for_user("lg", owner_id="alice")  # the side-by-side script's own, empty cube
        self.mos.share_cube_with_user("shared", "bob", "write", user_id="alice")
        self.key = {"alice": self.keys.create("alice")[0], "bob": self.keys.create("bob")[0],
                    "scout": self.keys.create("alice", agent_id="scout")[0]}
        self.start()

    def start(self) -> None:
        app = create_app(self.mos, keys=self.keys, limits=Limits(rate=0, max_body_bytes=256_000), mcp=False)
        self.url, self.stop = serve(app)  # type: ignore[misc]

    def cube(self, who: str, cube_id: str | None = None) -> Any:  # a RemoteCube, given where faces take a CubeAPI
        return RemoteCube(self.url, self.key[who], cube_id=cube_id or f"{who}_cube")

    def close(self) -> None:
        self.stop()
        self.mos.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("remote-faces") / "home", embedder)
    try:
        yield service
    finally:
        service.close()


@pytest.fixture
def alice(svc: Service) -> Iterator[Any]:
    with svc.cube("alice") as cube:
        yield cube


@pytest.fixture(scope="module")
def lg(svc: Service) -> Iterator[Any]:
    with svc.cube("alice", "lg") as cube:
        yield cube


# -- LangGraph store: the unit suite's side-by-side script with InMemoryStore -------------------------------
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(st.one_of(put_op, put_op, delete_op, get_op, search_op, list_op), min_size=1, max_size=10))
def test_remote_store_same_observable_results_as_inmemorystore(svc: Service, lg: Any,
                                                               ops: list[tuple[Any, ...]]) -> None:
    index: Any = {"dims": 384, "embed": lambda texts: svc.embedder.embed_documents(texts).tolist(), "fields": ["text"]}
    ref, ours = InMemoryStore(index=index), MemOSStore(lg, index={"fields": ["text"]})
    try:
        for op in ops:
            expected, got = _apply(ref, op), _apply(ours, op)
            _prune(ref)
            if op[0] == "search" and op[3] is not None:
                if op[5] == 0 and op[4] >= 12:
                    assert sorted(map(repr, got)) == sorted(map(repr, expected)), op
                else:
                    assert len(got) == len(expected), op
            else:
                assert got == expected, op
    finally:
        for ns in ours.list_namespaces(limit=1000):
            ours.batch([PutOp(h.namespace, h.key, None) for h in ours.search(ns, limit=1000)])


def test_remote_store_semantic_search_ttl_provenance_and_async(svc: Service, alice: Any) -> None:
    store = MemOSStore(alice, index={"fields": ["text"]})
    ns = ("users", "alice", "memories")
    store.put(ns, "tea", {"text": "Alice drinks genmaicha green tea every morning", "tag": "food"})
    store.put(ns, "city", {"text": "Alice moved to Lisbon in 2021", "tag": "place"})
    store.put(ns, "secret", {"text": "Alice loves green tea too"}, index=False)
    hits = store.search(("users", "alice"), query="what tea does Alice like?", limit=3)
    assert hits[0].key == "tea" and hits[0].score is not None
    assert hits[-1].key == "secret" and hits[-1].score is None  # unindexed: last, without a score
    assert store.search(("users",), query="coffee", filter={"tag": "place"})[0].key == "city"
    got = store.get(ns, "tea")
    assert got is not None and got.value["tag"] == "food" and got.created_at.tzinfo is not None
    # the index items are memories of the service's cube, filed under alice, with provenance
    store.put_with_provenance(ns, "pet", {"text": "Alice has a cat called Miso"}, sources=["thread:t1"])
    item = svc.mos.cube("alice_cube", user_id="alice").search("cat Miso", top_k=1)[0].item
    assert item.user_id == "alice" and item.sources == ["thread:t1"] and item.created_by == "user:alice"
    # TTL: expired items vanish at once, and a sweep on the service removes them
    short = MemOSStore(alice, ttl={"default_ttl": 0.0005})
    short.put(("tmp",), "k", {"x": 1})
    import time

    time.sleep(0.1)
    assert short.get(("tmp",), "k") is None and short.sweep_ttl() >= 1

    async def twins() -> None:
        await store.aput(("users", "alice", "music"), "cello", {"text": "Alice plays the cello"})
        found = await store.asearch(("users", "alice", "music"), query="instrument")
        assert [h.key for h in found] == ["cello"]
        assert (await store.aget(("users", "alice", "music"), "cello")).value["text"].endswith("cello")  # type: ignore[union-attr]
        assert ("users", "alice", "music") in await store.alist_namespaces(prefix=("users",))
        await store.adelete(("users", "alice", "music"), "cello")

    asyncio.run(twins())
    with pytest.raises(InvalidNamespaceError):  # checked here, as locally: nothing is sent
        store.put(("a.b",), "k", {"text": "x"})
    with pytest.raises(InvalidInputError, match="embed"):
        MemOSStore(alice, index={"embed": lambda t: [[0.0] * 384 for _ in t], "dims": 384})
    with pytest.raises(InvalidInputError):  # the service's cube has another vector space
        MemOSStore(alice, index={"dims": 1536, "fields": ["text"]}).put(("z",), "k", {"text": "x"})


# -- LangChain chat history ----------------------------------------------------------------------------------
def test_remote_history_persists_remembers_and_runs_async(svc: Service, alice: Any) -> None:
    history = MemOSChatMessageHistory(alice, "s-remote", remember=True)
    history.add_messages([HumanMessage("My sister Jo lives in Lisbon.", name="Alice"), AIMessage("Noted!")])
    with svc.cube("alice") as again:  # a second client sees the same transcript
        messages = MemOSChatMessageHistory(again, "s-remote").messages
    assert [(type(m), m.content) for m in messages] == [(HumanMessage, "My sister Jo lives in Lisbon."), (AIMessage, "Noted!")]
    assert messages[0].name == "Alice" and all(m.id for m in messages)
    remembered = svc.mos.cube("alice_cube", user_id="alice").search("where does Jo live?", top_k=1)[0].item
    assert remembered.user_id == "alice" and remembered.session_id == "s-remote" and remembered.sources == [messages[0].id]

    async def twins() -> None:
        await history.aadd_messages([HumanMessage("And my brother lives in Porto.")])
        assert len(await history.aget_messages()) == 3
        await history.aclear()

    asyncio.run(twins())
    assert history.messages == []
    with pytest.raises(InvalidTypeError, match="LangChain messages"):
        history.add_messages([HumanMessage("ok"), "not a message"])  # type: ignore[list-item]


# -- LlamaIndex chat stores and KV stores: the unit suite's scripts, side by side with the Simple* stores -----
def test_remote_llama_chat_store_matches_simple(alice: Any) -> None:
    assert exercise_chat_store(MemOSChatStore.from_defaults(alice)) == exercise_chat_store(SimpleChatStore())


def test_remote_llama_async_chat_store_queue(svc: Service, alice: Any) -> None:
    def msg(text: str) -> ChatMessage:
        return ChatMessage(role="user", content=text)

    async def run() -> None:
        store = MemOSAsyncChatStore.from_defaults(alice)
        await store.set_messages("q", [msg(f"m{i}") for i in range(5)])
        assert await store.count_messages("q") == 5
        assert [m.content for m in await store.archive_oldest_messages("q", 2)] == ["m0", "m1"]
        assert [m.content for m in await store.get_messages("q")] == ["m2", "m3", "m4"]
        assert [m.content for m in await store.get_messages("q", status=MessageStatus.ARCHIVED)] == ["m0", "m1"]
        assert [m.content for m in await store.get_messages("q", status=None, limit=2, offset=1)] == ["m1", "m2"]
        assert [m.content for m in await store.delete_oldest_messages("q", 1)] == ["m2"]
        await store.add_messages("q", [msg("m5")], status=MessageStatus.ARCHIVED)
        assert await store.count_messages("q", status=MessageStatus.ARCHIVED) == 3
        await store.delete_messages("q", status=MessageStatus.ARCHIVED)
        assert await store.count_messages("q", status=None) == 2
        raw: Any = svc.mos._cube("alice_cube").store
        seq = raw.read(
            "SELECT seq FROM llama_index_chat WHERE key='q' ORDER BY seq")[0][0]
        assert (await store.delete_message("q", seq)).content == "m3"  # type: ignore[union-attr]
        assert "q" in await store.get_keys()
        with pytest.raises(InvalidInputError):
            await store.add_message("", msg("x"))

    asyncio.run(run())


def test_remote_llama_docstore_index_store_and_kv(alice: Any) -> None:
    assert exercise_docstore(MemOSDocumentStore.from_cube(alice, namespace="ds1")) == exercise_docstore(SimpleDocumentStore())
    assert exercise_index_store(MemOSIndexStore.from_cube(alice, namespace="is1")) == exercise_index_store(SimpleIndexStore())
    kv = MemOSKVStore.from_cube(alice)
    kv.put_all([("a", {"x": 1}), ("b", {"y": [1, 2]})], collection="c1", batch_size=7)
    kv.put("a", {"z": None}, collection="c2")
    assert kv.get_all("c1") == {"a": {"x": 1}, "b": {"y": [1, 2]}} and kv.get("a", "c2") == {"z": None}
    assert kv.delete("a", "c1") and not kv.delete("a", "c1") and kv.get("a", "c1") is None
    with pytest.raises(TypeError):  # not JSON: refused here, nothing half-written
        kv.put_all([("ok", {"v": 1}), ("bad", {"v": object()})], collection="c3")
    with pytest.raises(InvalidTypeError):
        kv.put_all([("ok", {"v": 1}), ("bad", "not a dict")], collection="c3")  # type: ignore[list-item]
    assert kv.get_all("c3") == {}

    async def twins() -> None:
        await kv.aput("k", {"v": 1})
        await kv.aput_all([("j", {"v": 2})])
        assert await kv.aget("k") == {"v": 1} and {"k", "j"} <= set(await kv.aget_all())
        assert await kv.adelete("k")

    asyncio.run(twins())


# -- who may do what ------------------------------------------------------------------------------------------
def test_one_key_cannot_reach_another_users_namespaces_or_sessions(svc: Service) -> None:
    with svc.cube("alice", "shared") as a, svc.cube("bob", "shared") as b:
        MemOSStore(a).put(("users", "alice", "notes"), "n1", {"text": "alice's private note"})
        MemOSChatMessageHistory(a, "s-private").add_user_message("alice's words")
        MemOSChatStore.from_defaults(a).add_message("k1", ChatMessage(role="user", content="alice's chat"))
        MemOSKVStore.from_cube(a).put("doc", {"owner": "alice"})

        bob_store = MemOSStore(b)
        with pytest.raises(AccessDeniedError):
            bob_store.get(("users", "alice", "notes"), "n1")
        with pytest.raises(AccessDeniedError):
            bob_store.put(("users", "alice", "notes"), "n2", {"text": "bob writes in alice's space"})
        assert bob_store.search(("users",)) == [] and ("users", "alice", "notes") not in bob_store.list_namespaces()
        bob_store.put(("users", "bob", "notes"), "n1", {"text": "bob's own"})  # his own namespace is fine
        # sessions are per user: bob's "s-private" is his own, as an unknown one (alice's name stays hidden)
        assert MemOSChatMessageHistory(b, "s-private").messages == MemOSChatMessageHistory(b, "no-such").messages == []
        MemOSChatMessageHistory(b, "s-private").clear()  # his own messages of it: none
        assert [m.content for m in MemOSChatMessageHistory(a, "s-private").messages] == ["alice's words"]
        # per-user keys: bob's chat store and KV store simply have no such rows
        assert MemOSChatStore.from_defaults(b).get_messages("k1") == [] and MemOSChatStore.from_defaults(b).get_keys() == []
        assert MemOSKVStore.from_cube(b).get("doc") is None
        # a claim to be alice (a binding, a run's user) is refused by the service, not trusted
        with pytest.raises(AccessDeniedError):
            MemOSChatStore.from_defaults(b, user_id="alice").get_messages("k1")
        with pytest.raises(AccessDeniedError):
            MemOSKVStore.from_cube(b, user_id="alice").get("doc")
        with pytest.raises(AccessDeniedError):
            MemOSChatMessageHistory(b, "s-private", user_id="alice").messages  # noqa: B018
        with pytest.raises(AccessDeniedError):  # an agent name only comes with that agent's key
            bob_store.as_principal("scout").get(("agents", "scout", "n"), "k")
    with svc.cube("scout", "alice_cube") as scout:  # alice's key for her agent "scout": its namespace, and no other agent's
        MemOSStore(scout).as_principal("scout").put(("agents", "scout", "n"), "k", {"text": "scout's note"})
        with pytest.raises(AccessDeniedError):
            MemOSStore(scout).as_principal("writer").get(("agents", "writer"), "k")
    with svc.cube("alice", "bob_cube") as theirs, pytest.raises(CubeNotFoundError):
        MemOSStore(theirs).get(("users", "alice"), "k")  # another user's cube does not exist for alice
    with svc.cube("alice", "bob_cube") as theirs, pytest.raises(CubeNotFoundError):
        MemOSKVStore.from_cube(theirs).get("doc")
    denied = [r for r in svc.mos.cube("shared", user_id="alice", access="owner").audit_log(50) if not r["allowed"]]
    assert {r["action"] for r in denied} >= {"store_read", "store_write"}  # sessions are per user: none refused
    claims = [r for r in svc.keys.audit_log(50) if not r["allowed"]]
    assert {r["action"] for r in claims} >= {"act_as", "act_as_agent"}


# -- hostile input --------------------------------------------------------------------------------------------
def test_hostile_input_is_a_structured_refusal(svc: Service, alice: Any) -> None:
    store = MemOSStore(alice)
    with pytest.raises(InvalidInputError, match="JSON"):
        store.put(("a",), "k", {"x": object()})
    with pytest.raises(InvalidInputError):
        store.put(("a",), "k", {"x": math.nan})
    with pytest.raises(InvalidInputError):
        store.put(("a",), "", {"x": 1})  # empty key
    with pytest.raises(InvalidTypeError):  # 65 labels: the service's limit, a 422 not a 500
        store.put(tuple(f"l{i}" for i in range(65)), "k", {"x": 1})
    with pytest.raises(OversizedInputError):
        store.put(("a",), "big", {"x": "y" * 300_000})
    with pytest.raises(InvalidTypeError):
        MemOSChatMessageHistory(alice, "s").add_messages([HumanMessage("x")] * 1001)  # over the 1000 per request
    headers = {"Authorization": f"Bearer {svc.key['alice']}"}
    bad_bodies = [
        ("/v1/faces/store/batch", {"ops": [{"op": "put", "namespace": ["a"], "key": "k", "value": "not an object"}]}),
        ("/v1/faces/store/batch", {"ops": [{"op": "get", "namespace": ["a"], "key": ""}]}),
        ("/v1/faces/store/batch", {"ops": [{"op": "drop_table", "namespace": ["a"]}]}),
        ("/v1/faces/store/batch", {"ops": [{"op": "get", "namespace": ["a.b"], "key": "k"}]}),
        ("/v1/faces/store/batch", {"ops": [{"op": "get", "namespace": ["x" * 600], "key": "k"}]}),
        ("/v1/faces/chat-history", {"op": "add", "session_id": "s", "messages": [{"type": "nonsense"}]}),
        ("/v1/faces/llama-chat", {"op": "add", "key": "k", "messages": [{"role": 42, "blocks": "x"}]}),
        ("/v1/faces/llama-chat", {"op": "delete_seq", "key": "k"}),
        ("/v1/faces/llama-kv", {"op": "put_all", "pairs": [["k", [1, 2]]]}),
        ("/v1/faces/llama-kv", {"op": "get"}),
    ]
    with httpx.Client(base_url=svc.url, headers=headers) as http:
        for route, body in bad_bodies:
            got = http.post(route, json=body)
            assert got.status_code == 422 and got.json()["error"]["type"] in (
                "InvalidInputError", "InvalidTypeError", "InvalidStoreNamespaceError"), (route, body, got.text)
        assert http.post("/v1/faces/store/batch", content=b"{not json", headers={"Content-Type": "application/json"}
                         ).status_code == 422
        # a claimed principal is not trusted: the key's user acts, or the request is refused
        got = http.post("/v1/faces/store/batch", json={"user_id": "bob", "ops": [{"op": "get", "namespace": ["users", "bob"], "key": "k"}]})
        assert got.status_code == 403
    assert store.list_namespaces(prefix=("a",)) == []  # nothing of the above was written


# -- a restarted service, a second client ------------------------------------------------------------------------
def test_a_restarted_service_serves_what_was_written(tmp_path: Path, embedder: Any) -> None:
    svc = Service(tmp_path / "home", embedder)
    try:
        with svc.cube("alice") as cube:
            MemOSStore(cube, index=True).put(("users", "alice"), "k", {"text": "kept across restarts"})
            MemOSKVStore.from_cube(cube).put("doc", {"v": 1})
        svc.stop()
        svc.mos.close()
        svc.mos = MOS(svc.home, embedder=embedder)
        svc.keys = KeyStore.open(svc.home / "mos.db")
        svc.start()
        with svc.cube("alice") as cube:
            store = MemOSStore(cube, index=True)
            assert store.get(("users", "alice"), "k").value == {"text": "kept across restarts"}  # type: ignore[union-attr]
            assert store.search(("users",), query="restarts")[0].key == "k"
            assert MemOSKVStore.from_cube(cube).get("doc") == {"v": 1}
    finally:
        svc.close()


# -- inside runs: a LangGraph graph's injected store, RunnableWithMessageHistory --------------------------------
def test_runs_on_a_remote_cube_act_as_the_key(svc: Service, alice: Any) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory
    from langgraph.config import get_store
    from langgraph.graph import END, START, MessagesState, StateGraph

    def node(state: MessagesState) -> dict[str, Any]:
        get_store().put(("users", "alice", "run"), "k", {"text": "written inside a run"})
        return {"messages": []}

    graph = StateGraph(MessagesState).add_node("n", node).add_edge(START, "n").add_edge("n", END) \
        .compile(store=MemOSStore(alice))
    graph.invoke({"messages": []}, config={"configurable": {"user_id": "alice"}})
    assert MemOSStore(alice).get(("users", "alice", "run"), "k") is not None
    with pytest.raises(AccessDeniedError):  # the run claims bob; the key is alice's
        graph.invoke({"messages": []}, config={"configurable": {"user_id": "bob"}})

    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    chain = RunnableWithMessageHistory(
        prompt | FakeListChatModel(responses=["Nice to meet you, Alice.", "You are Alice."]),
        lambda session_id: MemOSChatMessageHistory(alice, session_id, user_id="alice", remember=True),
        input_messages_key="question", history_messages_key="history")
    config: Any = {"configurable": {"session_id": "s-chain"}}
    chain.invoke({"question": "I'm Alice."}, config=config)
    assert chain.invoke({"question": "Who am I?"}, config=config).content == "You are Alice."
    assert [m.content for m in MemOSChatMessageHistory(alice, "s-chain").messages] == [
        "I'm Alice.", "Nice to meet you, Alice.", "Who am I?", "You are Alice."]


def test_grants_on_the_service_cube_are_the_owners(svc: Service) -> None:
    """``teams`` namespaces open only by grants; over HTTP only the cube's owner may grant (audited)."""
    with svc.cube("alice", "shared") as a, svc.cube("bob", "shared") as b:
        with pytest.raises(AccessDeniedError):  # every batch is checked on the service, the owner's too
            MemOSStore(a).put(("teams", "research", "notes"), "n1", {"text": "the team's plan"})
        MemOSStore(a).remote.grant(("teams", "research"), "user:alice", "write")  # type: ignore[union-attr]
        MemOSStore(a).put(("teams", "research", "notes"), "n1", {"text": "the team's plan"})
        with pytest.raises(AccessDeniedError):
            MemOSStore(b).get(("teams", "research", "notes"), "n1")
        with pytest.raises(AccessDeniedError):  # bob may write the cube, but grants are its owner's
            MemOSStore(b).remote.grant(("teams", "research"), "user:bob", "read")  # type: ignore[union-attr]
        MemOSStore(a).remote.grant(("teams", "research"), "user:bob", "read")  # type: ignore[union-attr]
        assert MemOSStore(b).get(("teams", "research", "notes"), "n1").value == {"text": "the team's plan"}  # type: ignore[union-attr]
        with pytest.raises(AccessDeniedError):  # read, not write
            MemOSStore(b).put(("teams", "research", "notes"), "n2", {"text": "bob's idea"})
        MemOSStore(a).remote.grant(("teams", "research"), "user:bob", None)  # type: ignore[union-attr]
        with pytest.raises(AccessDeniedError):
            MemOSStore(b).get(("teams", "research", "notes"), "n1")
        # the policy object users write locally works on a remote cube too: it forwards to the service
        NamespacePolicy(a).grant(("teams", "research"), "user:bob", "read")
        assert MemOSStore(b).get(("teams", "research", "notes"), "n1") is not None
        with pytest.raises(AccessDeniedError):
            NamespacePolicy(b).grant(("teams", "research"), "user:bob", "write")
        NamespacePolicy(a).revoke(("teams", "research"), "user:bob")
        with pytest.raises(AccessDeniedError):
            MemOSStore(b).get(("teams", "research", "notes"), "n1")


def test_a_face_error_comes_back_as_its_own_class() -> None:
    """An error class the service raises that lives in a face module maps back to that class, not its parent."""
    from memos_integrations.langgraph.store_logic import InvalidStoreNamespaceError
    from memos_integrations.remote import _error_class

    assert _error_class("InvalidStoreNamespaceError") is InvalidStoreNamespaceError
    assert _error_class("NoSuchErrorAnywhere") is None


def test_a_remote_search_puts_the_callers_working_memory_first(svc: Service) -> None:
    """``RemoteCube.search(current_session=)`` reaches the cube: with a plan that puts working memory first,
    the session's working memory leads, as on a local cube (the retrievers pass the session they act in)."""
    with svc.cube("alice") as cube:
        cube.add(memory=["The user prefers window seats on trains.", "Train tickets to Lyon cost 40 euros."])
        work = cube.add(memory="Current task: find a train from Paris to Lyon on Friday.", session_id="w1",
                        metadata={"partition": "working"})[0]
        hits = cube.search("train seats", top_k=3, plan="multihop", current_session="w1")
        assert hits[0].item.id == work.id and "working" in hits[0].ranks
        assert all("working" not in h.ranks for h in cube.search("train seats", top_k=3, plan="multihop"))
