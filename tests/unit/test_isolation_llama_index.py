"""Two users and two namespaces through every LlamaIndex class: one scope model.

Each class is driven by the same body twice, once through its sync methods and once through its
``a*`` twins (``use_async``), so the async methods are proven to return what the sync ones return.
Every read, write, delete, list and search path must see only its own (user, namespace), and keys
(node ids, entity names, documents, KV and chat keys) that are equal across scopes stay separate items.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.data_structs import IndexDict  # noqa: E402
from llama_index.core.graph_stores.types import EntityNode, Relation  # noqa: E402
from llama_index.core.llms import ChatMessage  # noqa: E402
from llama_index.core.memory import Memory  # noqa: E402
from llama_index.core.schema import NodeRelationship, QueryBundle, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from memos_integrations.errors import (  # noqa: E402
    AccessDeniedError,
    EmbedderMismatchError,
    InvalidInputError,
    InvalidTypeError,
)
from memos_integrations.items import Kind, MemoryItem  # noqa: E402
from memos_integrations.llama_index import (  # noqa: E402
    MemOSAsyncChatStore,
    MemOSChatStore,
    MemOSDocumentStore,
    MemOSEmbedding,
    MemOSIndexStore,
    MemOSKVStore,
    MemOSMemoryBlock,
    MemOSPropertyGraphStore,
    MemOSRetriever,
    MemOSVectorStore,
    aflush_memory,
    flush_memory,
    storage_context_from_cube,
)
from memos_integrations.llama_index._nodes import node_to_item  # noqa: E402

USERS = ["alice", "bob"]
SPACES = ["v1", "v2"]
SCOPES = list(itertools.product(USERS, SPACES))
DIM = 384
BOTH_WAYS = pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
ASYNC_NAME = {"add": "async_add", "upsert_nodes": "aupsert_nodes", "upsert_relations": "aupsert_relations",
              "vector_query": "avector_query", "get_rel_map": "aget_rel_map", "get_triplets": "aget_triplets",
              "get_nodes": "aget_nodes", "delete_nodes": "adelete_nodes", "clear": "aclear", "query": "aquery",
              "put": "aput", "put_all": "aput_all", "get_all": "aget_all", "get": "aget", "delete": "adelete",
              "retrieve": "aretrieve", "get_messages": "aget_messages", "add_message": "async_add_message",
              "set_messages": "aset_messages", "delete_messages": "adelete_messages",
              "delete_message": "adelete_message", "delete_last_message": "adelete_last_message",
              "get_keys": "aget_keys", "get_llama_nodes": "aget_llama_nodes",
              "delete_llama_nodes": "adelete_llama_nodes"}


def call(obj: Any, name: str, use_async: bool, *args: Any, **kwargs: Any) -> Any:
    """``obj.name(...)``, or its async twin run to completion: one test body, both ways."""
    if not use_async:
        return getattr(obj, name)(*args, **kwargs)
    return asyncio.run(getattr(obj, ASYNC_NAME[name])(*args, **kwargs))


def vec(seed: int) -> list[float]:
    v = np.random.default_rng(seed).normal(size=DIM)
    return (v / np.linalg.norm(v)).tolist()


def nodes_for(user: str, space: str) -> list[TextNode]:
    """The same node ids in every scope, with texts that say whose they are."""
    out = []
    for i in range(2):
        node = TextNode(id_=f"n{i}", text=f"{user} {space} tea note {i}", metadata={"owner": user, "i": i},
                        embedding=vec(i))
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="doc")
        out.append(node)
    return out


def owners(nodes: Any) -> set[tuple[str, str]]:
    return {tuple(n.get_content().split()[:2]) for n in nodes}  # type: ignore[misc]


# -- vector store -----------------------------------------------------------------------------
@BOTH_WAYS
def test_vector_store_every_path_stays_in_its_scope(cube: Any, use_async: bool) -> None:
    stores = {s: MemOSVectorStore.from_defaults(cube=cube, user_id=s[0], namespace=s[1]) for s in SCOPES}
    for scope, store in stores.items():
        assert call(store, "add", use_async, nodes_for(*scope)) == ["n0", "n1"]
    assert len({store.item_id("n0") for store in stores.values()}) == 4  # four items, one node id
    for scope, store in stores.items():
        assert owners(call(store, "get_nodes", use_async)) == {scope}
        assert owners(call(store, "get_nodes", use_async, ["n0"])) == {scope}
        mine = MetadataFilters(filters=[MetadataFilter(key="i", value=1)])
        assert [n.node_id for n in call(store, "get_nodes", use_async, None, mine)] == ["n1"]
        for mode, kw in [(VectorStoreQueryMode.DEFAULT, {}), (VectorStoreQueryMode.HYBRID, {}),
                         (VectorStoreQueryMode.SPARSE, {}), (VectorStoreQueryMode.MMR, {"mmr_threshold": 0.5})]:
            q = VectorStoreQuery(query_embedding=vec(0), query_str="tea note", similarity_top_k=10, mode=mode, **kw)
            res = call(store, "query", use_async, q)
            assert sorted(res.ids) == ["n0", "n1"] and owners(res.nodes) == {scope}, mode
    # deletes reach only their own scope
    call(stores[("alice", "v1")], "delete_nodes", use_async, ["n0"])
    call(stores[("alice", "v2")], "delete", use_async, "doc")
    call(stores[("bob", "v1")], "clear", use_async)
    left = {s: sorted(n.node_id for n in store.get_nodes()) for s, store in stores.items()}
    assert left == {("alice", "v1"): ["n1"], ("alice", "v2"): [], ("bob", "v1"): [], ("bob", "v2"): ["n0", "n1"]}


def test_a_second_namespace_index_leaves_the_first(cube: Any) -> None:
    """Regression: a VectorStoreIndex built in namespace v2 over the same nodes emptied the v1 index."""
    emb = MemOSEmbedding.from_cube(cube)

    def nodes() -> list[TextNode]:
        return [TextNode(id_="tea-1", text="Genmaicha is green tea with roasted rice.")]

    v1 = VectorStoreIndex(nodes(), storage_context=storage_context_from_cube(cube, namespace="v1"), embed_model=emb)
    VectorStoreIndex(nodes(), storage_context=storage_context_from_cube(cube, namespace="v2"), embed_model=emb)
    hits = v1.as_retriever(similarity_top_k=1).retrieve("roasted rice tea")
    assert [h.node.node_id for h in hits] == ["tea-1"]


def test_another_user_cannot_take_over_a_node_id(cube: Any) -> None:
    """Regression: bob writing alice's node id made it his (history alice v1, bob v2) and emptied her retrieval."""
    alice = MemOSVectorStore.from_defaults(cube=cube, user_id="alice")
    bob = MemOSVectorStore.from_defaults(cube=cube, user_id="bob")
    alice.add(nodes_for("alice", "default")[:1])
    bob.add(nodes_for("bob", "default")[:1])
    res = alice.query(VectorStoreQuery(query_embedding=vec(0), similarity_top_k=5))
    assert res.ids == ["n0"] and owners(res.nodes) == {("alice", "default")}
    history = cube.history(alice.item_id("n0"))
    assert [(h.user_id, h.version) for h in history] == [("alice", 1)]


def test_a_scoped_id_held_by_another_memory_is_refused_without_naming_it(cube: Any) -> None:
    store = MemOSVectorStore.from_defaults(cube=cube, user_id="alice")
    cube.add_items([MemoryItem(id=store.scope_keys().item_id("n0"), text="mallory's", user_id="mallory")])
    with pytest.raises(AccessDeniedError) as err:
        store.add(nodes_for("alice", "default")[:1])
    assert "mallory" not in str(err.value) and "n0" in str(err.value)
    assert cube.get(store.scope_keys().item_id("n0")).text == "mallory's"


def test_rows_written_before_scoping_are_still_found_and_updated_in_place(cube: Any) -> None:
    """Cubes written by the earlier face (item id = node id, graph ids pg:<ns>:<name>) stay readable."""
    old = nodes_for("old", "default")
    cube.add_items([node_to_item(n, tags=["llama_index:vector:default"], user_id=None) for n in old],
                   vectors=np.array([n.embedding for n in old], dtype=np.float32))
    store = MemOSVectorStore.from_defaults(cube=cube)
    assert sorted(n.node_id for n in store.get_nodes()) == ["n0", "n1"]
    assert store.query(VectorStoreQuery(query_embedding=vec(1), similarity_top_k=1)).ids == ["n1"]
    changed = nodes_for("new", "default")[:1]
    store.add(changed)
    assert store.item_id("n0") == "n0" and len(cube.history("n0")) == 2  # the same item, a new version
    assert sorted(n.get_content() for n in store.get_nodes()) == ["new default tea note 0", "old default tea note 1"]
    assert MemOSVectorStore.from_defaults(cube=cube, user_id="alice").get_nodes() == []

    def legacy(name: str, label: str) -> MemoryItem:
        return MemoryItem(id=f"pg:default:{name}", text=name, kind=Kind.FACT, tags=["llama_index:graph:default", "entity"],
                          metadata={"_pg": {"type": "entity", "label": label, "name": name}}, method="llama_index")

    cube.add_items([legacy("Alice", "PERSON"), legacy("Acme", "ORG")])
    cube.relate("pg:default:Alice", "pg:default:Acme", "WORKS_AT")
    graph = MemOSPropertyGraphStore.from_defaults(cube)
    assert [(s.id, r.label, o.id) for s, r, o in graph.get_triplets(entity_names=["Alice"])] == [("Alice", "WORKS_AT", "Acme")]
    graph.upsert_nodes([EntityNode(name="Acme", label="COMPANY")])
    assert graph.item_id("Acme") == "pg:default:Acme" and graph.get(ids=["Acme"])[0].label == "COMPANY"
    graph.upsert_relations([Relation(label="KNOWS", source_id="Alice", target_id="Bob")])
    assert {(s.id, r.label, o.id) for s, r, o in graph.get_triplets(entity_names=["Alice"])} == {
        ("Alice", "WORKS_AT", "Acme"), ("Alice", "KNOWS", "Bob")}


def test_chat_rows_from_before_the_user_column_are_read(cube: Any) -> None:
    with cube.store.transaction() as c:  # the table as the earlier face created it
        c.execute("CREATE TABLE llama_index_chat (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, "
                  "status TEXT NOT NULL, message TEXT NOT NULL, created_at REAL NOT NULL)")
        c.execute("INSERT INTO llama_index_chat (key, status, message, created_at) VALUES (?, 'active', ?, 0)",
                  ("s1", ChatMessage(role="user", content="old").model_dump_json()))
    assert [m.content for m in MemOSChatStore.from_defaults(cube).get_messages("s1")] == ["old"]
    assert MemOSChatStore.from_defaults(cube, user_id="alice").get_messages("s1") == []


# -- property graph store ---------------------------------------------------------------------
@BOTH_WAYS
def test_graph_store_every_path_stays_in_its_scope(cube: Any, use_async: bool) -> None:
    graphs = {s: MemOSPropertyGraphStore.from_defaults(cube, user_id=s[0], namespace=s[1]) for s in SCOPES}
    for (user, space), g in graphs.items():
        call(g, "upsert_nodes", use_async, [EntityNode(name=user.title(), label="PERSON", properties={"space": space}),
                                            EntityNode(name="Acme", label="ORG", properties={"who": user})])
        call(g, "upsert_relations", use_async, [Relation(label="CLIENT_OF", source_id=user.title(), target_id="Acme")])
    for (user, space), g in graphs.items():
        me = user.title()
        assert {n.id for n in call(g, "get", use_async)} == {me, "Acme"}
        assert call(g, "get", use_async, None, ["Acme"])[0].properties["who"] == user
        assert call(g, "get", use_async, {"space": space})[0].id == me
        assert [(s.id, o.id) for s, _, o in call(g, "get_triplets", use_async, ["Acme"])] == [(me, "Acme")]
        assert len(call(g, "get_triplets", use_async, None, ["CLIENT_OF"])) == 1
        assert [t[0].id for t in call(g, "get_rel_map", use_async, call(g, "get", use_async, None, ["Acme"]), 2)] == [me]
        nodes, _ = call(g, "vector_query", use_async, VectorStoreQuery(query_embedding=vec(3), similarity_top_k=10))
        assert {n.id for n in nodes} == {me, "Acme"} and {n.properties.get("who") for n in nodes} == {user, None}
        assert g.get_schema() == {"node_labels": ["ORG", "PERSON"], "relation_types": ["CLIENT_OF"]}
    for (user, space), g in graphs.items():  # LlamaIndex nodes kept in the graph, the same id in every scope
        g.upsert_llama_nodes([TextNode(id_="c1", text=f"{user} {space} chunk")])
    for (user, space), g in graphs.items():
        assert [n.get_content() for n in call(g, "get_llama_nodes", use_async, ["c1"])] == [f"{user} {space} chunk"]
    call(graphs[("alice", "v2")], "delete_llama_nodes", use_async, ["c1"])
    assert [len(g.get_llama_nodes(["c1"])) for g in graphs.values()] == [1, 0, 1, 1]
    call(graphs[("alice", "v1")], "delete", use_async, ["Acme"])
    call(graphs[("bob", "v1")], "delete", use_async, None, ["CLIENT_OF"])
    assert [len(g.get_triplets(relation_names=["CLIENT_OF"])) for g in graphs.values()] == [0, 1, 0, 1]
    assert [len(g.get()) for g in graphs.values()] == [2, 2, 3, 3]


def test_another_users_entity_of_the_same_name_is_another_node(cube: Any) -> None:
    """Regression: bob upserting ``Acme`` deleted alice's ``Acme`` and her CLIENT_OF triplet."""
    alice = MemOSPropertyGraphStore.from_defaults(cube, user_id="alice")
    alice.upsert_nodes([EntityNode(name="Alice"), EntityNode(name="Acme", properties={"tier": "gold"})])
    alice.upsert_relations([Relation(label="CLIENT_OF", source_id="Alice", target_id="Acme")])
    bob = MemOSPropertyGraphStore.from_defaults(cube, user_id="bob")
    bob.upsert_nodes([EntityNode(name="Acme", properties={"tier": "none"})])
    assert [(s.id, r.label, o.id) for s, r, o in alice.get_triplets(entity_names=["Acme"])] == [("Alice", "CLIENT_OF", "Acme")]
    assert alice.get(ids=["Acme"])[0].properties == {"tier": "gold"}
    assert bob.get_triplets(entity_names=["Acme"]) == []


# -- docstore, index store, KV store -------------------------------------------------------------
@BOTH_WAYS
def test_kv_store_keys_are_per_user(cube: Any, use_async: bool) -> None:
    kvs = {u: MemOSKVStore.from_cube(cube, user_id=u) for u in [*USERS, None]}
    for u, kv in kvs.items():
        call(kv, "put", use_async, "k", {"owner": u})
        call(kv, "put_all", use_async, [("j", {"owner": u})], "other")
    for u, kv in kvs.items():
        assert call(kv, "get", use_async, "k") == {"owner": u}
        assert call(kv, "get_all", use_async, "other") == {"j": {"owner": u}}
    assert call(kvs["alice"], "delete", use_async, "k") is True
    assert kvs["alice"].get("k") is None and kvs["bob"].get("k") == {"owner": "bob"} and kvs[None].get("k")


def test_docstore_and_index_store_are_per_user_and_namespace(cube: Any) -> None:
    for user, space in SCOPES:
        MemOSDocumentStore.from_cube(cube, namespace=space, user_id=user).add_documents(
            [Document(text=f"{user} {space}", id_="d1")])
        struct = IndexDict()
        struct.index_id = "idx"
        struct.summary = f"{user} {space}"
        MemOSIndexStore.from_cube(cube, namespace=f"{space}/index", user_id=user).add_index_struct(struct)
    for user, space in SCOPES:
        docs = MemOSDocumentStore.from_cube(cube, namespace=space, user_id=user)
        assert docs.get_document("d1").text == f"{user} {space}" and list(docs.docs) == ["d1"]
        index = MemOSIndexStore.from_cube(cube, namespace=f"{space}/index", user_id=user)
        assert [s.summary for s in index.index_structs()] == [f"{user} {space}"]
    MemOSDocumentStore.from_cube(cube, namespace="v1", user_id="alice").delete_document("d1")
    assert MemOSDocumentStore.from_cube(cube, namespace="v1", user_id="bob").document_exists("d1")
    assert MemOSDocumentStore.from_cube(cube, namespace="v1").docs == {}


# -- chat stores ----------------------------------------------------------------------------------
@BOTH_WAYS
def test_chat_store_keys_by_user_and_session(cube: Any, use_async: bool) -> None:
    stores = {u: MemOSChatStore.from_defaults(cube, user_id=u) for u in USERS}
    for u, store in stores.items():
        call(store, "set_messages", use_async, "s1", [ChatMessage(role="user", content=f"{u} one")])
        call(store, "add_message", use_async, "s1", ChatMessage(role="user", content=f"{u} two"))
        call(store, "add_message", use_async, f"{u}-only", ChatMessage(role="user", content="x"))
    for u, store in stores.items():
        assert [m.content for m in call(store, "get_messages", use_async, "s1")] == [f"{u} one", f"{u} two"]
        assert call(store, "get_keys", use_async) == sorted(["s1", f"{u}-only"])
    assert call(stores["alice"], "delete_last_message", use_async, "s1").content == "alice two"
    assert call(stores["alice"], "delete_message", use_async, "s1", 0).content == "alice one"
    call(stores["alice"], "delete_messages", use_async, "alice-only")
    assert stores["alice"].get_keys() == []
    assert [m.content for m in stores["bob"].get_messages("s1")] == ["bob one", "bob two"]


async def test_async_chat_store_and_memory_are_per_user(cube: Any) -> None:
    a, b = (MemOSAsyncChatStore.from_defaults(cube, user_id=u) for u in USERS)
    await a.add_messages("s1", [ChatMessage(role="user", content=f"a{i}") for i in range(3)])
    await b.add_message("s1", ChatMessage(role="user", content="b0"))
    assert await a.count_messages("s1") == 3 and await b.count_messages("s1") == 1
    assert [m.content for m in await b.archive_oldest_messages("s1", 5)] == ["b0"]
    assert await a.count_messages("s1") == 3 and await b.get_keys() == ["s1"]
    await b.delete_messages("s1")
    assert [m.content for m in await a.delete_oldest_messages("s1", 1)] == ["a0"]
    assert [m.content for m in await a.get_messages("s1")] == ["a1", "a2"]
    seq = cube.store.read("SELECT seq FROM llama_index_chat WHERE user_id = 'alice' ORDER BY seq")[0][0]
    assert await b.delete_message("s1", seq) is None  # another user's row is not bob's to delete
    assert (await a.delete_message("s1", seq)).content == "a1"


# -- memory block, retriever --------------------------------------------------------------------
def test_memory_block_needs_a_user_or_an_explicit_opt_in(cube: Any) -> None:
    """Regression: a block with no user_id searched every user's memories without saying so."""
    with pytest.raises(InvalidInputError, match="user_id"):
        MemOSMemoryBlock.from_defaults(cube)
    cube.add(memory="Alice keeps bees.", user_id="alice")
    cube.add(memory="Bob keeps bees too.", user_id="bob")
    both = MemOSMemoryBlock.from_defaults(cube, all_users=True)
    assert asyncio.run(both.aget([ChatMessage(role="user", content="who keeps bees?")])).count("bees") == 2
    alice = MemOSMemoryBlock.from_defaults(cube, user_id="alice")
    assert asyncio.run(alice.aget([ChatMessage(role="user", content="who keeps bees?")])) == "- Alice keeps bees."
    assert asyncio.run(alice.aget([ChatMessage(role="user", content="   ")])) == ""


@BOTH_WAYS
def test_memory_flushes_per_user_and_session_end_flush(cube: Any, use_async: bool) -> None:
    """Two users' Memory with the same session id; a short session reaches long-term memory only by a flush."""
    memories = {u: Memory.from_defaults(session_id="s1", chat_store=MemOSAsyncChatStore.from_defaults(cube, user_id=u),
                                        memory_blocks=[MemOSMemoryBlock.from_defaults(cube, user_id=u)])
                for u in USERS}
    for u, memory in memories.items():
        memory.put(ChatMessage(role="user", content=f"My name is {u} and my cat is called {u}-cat."))
    assert cube.get_all(user_id="alice") == []  # under the token limit: nothing overflowed
    for memory in memories.values():
        flushed = asyncio.run(aflush_memory(memory)) if use_async else flush_memory(memory)
        assert flushed == 1
        assert (asyncio.run(aflush_memory(memory)) if use_async else flush_memory(memory)) == 0  # nothing twice
    for u in USERS:
        assert [(m.text, m.session_id) for m in cube.get_all(user_id=u)] == [(f"My name is {u} and my cat is called {u}-cat.", "s1")]
        assert [m.content for m in memories[u].get_all()] == [f"My name is {u} and my cat is called {u}-cat."]
    recalled = memories["alice"].get(input="What is my cat called?")
    text = " ".join(str(m.content) for m in recalled)
    assert "alice-cat" in text and "bob-cat" not in text
    with pytest.raises(InvalidTypeError, match="Memory"):
        flush_memory("not a memory")


@BOTH_WAYS
def test_retriever_stays_in_its_scope(cube: Any, use_async: bool) -> None:
    for user in USERS:
        cube.add(memory=f"{user} prefers window seats.", user_id=user)
    alice = MemOSRetriever.from_defaults(cube, user_id="alice")
    assert [h.node.get_content() for h in call(alice, "retrieve", use_async, "seats")] == ["alice prefers window seats."]
    assert call(alice, "retrieve", use_async, "   ") == []
    assert call(alice, "retrieve", use_async, QueryBundle("  ", embedding=None)) == []
    everyone = MemOSRetriever.from_defaults(cube)  # unbound: the cube owner's view
    assert len(call(everyone, "retrieve", use_async, "seats")) == 2


def test_run_context_names_the_user_and_a_conflict_is_refused_without_naming_it(cube: Any) -> None:
    pytest.importorskip("langgraph")
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    for user in USERS:
        cube.add(memory=f"{user} prefers window seats.", user_id=user)

    class State(TypedDict):
        out: list[str]

    class Context(TypedDict):
        user_id: str

    def build(retriever: MemOSRetriever) -> Any:
        def node(state: State) -> dict[str, Any]:
            return {"out": [h.node.get_content() for h in retriever.retrieve("seats")]}

        g = StateGraph(State, context_schema=Context)
        g.add_node("r", node)
        g.add_edge(START, "r")
        g.add_edge("r", END)
        return g.compile()

    assert build(MemOSRetriever.from_defaults(cube)).invoke({"out": []}, context={"user_id": "bob"})["out"] == [
        "bob prefers window seats."]
    with pytest.raises(AccessDeniedError) as err:
        build(MemOSRetriever.from_defaults(cube, user_id="alice")).invoke({"out": []}, context={"user_id": "bob"})
    assert "bob" not in str(err.value)


# -- embedder identity -----------------------------------------------------------------------------
def test_an_embed_model_of_another_model_is_refused_by_fingerprint(cube: Any) -> None:
    from llama_index.core.embeddings import MockEmbedding

    other = MockEmbedding(embed_dim=DIM)  # the right dimension, another model
    for make in (lambda: MemOSVectorStore.from_defaults(cube=cube, embed_model=other),
                 lambda: storage_context_from_cube(cube, embed_model=other),
                 lambda: MemOSPropertyGraphStore.from_defaults(cube, embed_model=other),
                 lambda: MemOSRetriever.from_defaults(cube, embed_model=other)):
        with pytest.raises(EmbedderMismatchError, match="MemOSEmbedding.from_cube"):
            make()
    with pytest.raises(EmbedderMismatchError, match="dim"):
        MemOSVectorStore.from_defaults(cube=cube, embed_model=MockEmbedding(embed_dim=8))
    ours = MemOSEmbedding.from_cube(cube)
    assert isinstance(storage_context_from_cube(cube, embed_model=ours), StorageContext)
    MemOSRetriever.from_defaults(cube, embed_model=ours)


def test_whitespace_queries_find_nothing(cube: Any) -> None:
    store = MemOSVectorStore.from_defaults(cube=cube, user_id="alice")
    store.add(nodes_for("alice", "v1"))
    for mode in (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.TEXT_SEARCH):
        assert store.query(VectorStoreQuery(query_str="  \n ", similarity_top_k=3, mode=mode)).ids == []
