"""MemOSPropertyGraphStore on the cube's embedded graph (items + the ``edges`` table)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.graph_stores import SimplePropertyGraphStore  # noqa: E402
from llama_index.core.graph_stores.types import ChunkNode, EntityNode, Relation  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters, VectorStoreQuery  # noqa: E402

from memos_integrations.errors import InvalidInputError, InvalidTypeError  # noqa: E402
from memos_integrations.llama_index import MemOSPropertyGraphStore, StructuredQueryUnsupportedError  # noqa: E402

ENTITIES = [
    EntityNode(name="Alice", label="PERSON", properties={"age": 31}),
    EntityNode(name="Bob", label="PERSON", properties={"age": 40}),
    EntityNode(name="Acme", label="ORG"),
    EntityNode(name="Paris", label="CITY"),
]
RELATIONS = [
    Relation(label="WORKS_AT", source_id="Alice", target_id="Acme", properties={"since": 2020}),
    Relation(label="KNOWS", source_id="Alice", target_id="Bob"),
    Relation(label="LOCATED_IN", source_id="Acme", target_id="Paris"),
]


def fill(store: Any) -> Any:
    store.upsert_nodes(ENTITIES)
    store.upsert_relations(RELATIONS)
    return store


def triples(ts: list[Any]) -> set[tuple[str, str, str]]:
    return {(s.id, r.label, o.id) for s, r, o in ts}


@pytest.fixture
def graph(cube: Any) -> MemOSPropertyGraphStore:
    return fill(MemOSPropertyGraphStore.from_defaults(cube))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"entity_names": ["Alice"]},
        {"entity_names": ["Paris"]},
        {"relation_names": ["KNOWS", "LOCATED_IN"]},
        {"ids": ["Bob"]},
        {"properties": {"since": 2020}},
        {"entity_names": ["Alice"], "relation_names": ["WORKS_AT"]},
        {},
    ],
)
def test_get_triplets_matches_simple(graph: Any, kwargs: dict[str, Any]) -> None:
    simple = fill(SimplePropertyGraphStore())
    assert triples(graph.get_triplets(**kwargs)) == triples(simple.get_triplets(**kwargs))


def test_nodes_round_trip(graph: Any) -> None:
    got = {n.id: n for n in graph.get(ids=["Alice", "Acme"])}
    assert got["Alice"].label == "PERSON" and got["Alice"].properties == {"age": 31}
    assert isinstance(got["Acme"], EntityNode)
    assert [n.id for n in graph.get(properties={"age": 40})] == ["Bob"]
    assert {n.id for n in graph.get()} == {"Alice", "Bob", "Acme", "Paris"}
    rel = graph.get_triplets(entity_names=["Alice"], relation_names=["WORKS_AT"])[0][1]
    assert rel.properties == {"since": 2020} and rel.source_id == "Alice"


def test_rel_map_depth_limit_and_ignored_relations(graph: Any) -> None:
    alice = graph.get(ids=["Alice"])
    assert triples(graph.get_rel_map(alice, depth=1)) == {("Alice", "WORKS_AT", "Acme"), ("Alice", "KNOWS", "Bob")}
    assert ("Acme", "LOCATED_IN", "Paris") in triples(graph.get_rel_map(alice, depth=2))
    assert len(graph.get_rel_map(alice, depth=2, limit=2)) == 2
    assert triples(graph.get_rel_map(alice, depth=2, ignore_rels=["WORKS_AT"])) == {("Alice", "KNOWS", "Bob")}
    assert graph.get_rel_map(alice, depth=0) == []


def test_relations_create_missing_endpoints(cube: Any) -> None:
    graph = MemOSPropertyGraphStore.from_defaults(cube)
    graph.upsert_relations([Relation(label="LIKES", source_id="Carol", target_id="Tea")])
    assert {n.id for n in graph.get()} == {"Carol", "Tea"}
    assert triples(graph.get_triplets(relation_names=["LIKES"])) == {("Carol", "LIKES", "Tea")}


def test_delete_entities_relations_and_properties(graph: Any, cube: Any) -> None:
    graph.delete(relation_names=["KNOWS"])
    assert triples(graph.get_triplets(entity_names=["Alice"])) == {("Alice", "WORKS_AT", "Acme")}
    graph.delete(entity_names=["Acme"])  # the node and its relations
    assert graph.get(ids=["Acme"]) == [] and graph.get_triplets(entity_names=["Alice"]) == []
    graph.delete(properties={"age": 40})
    assert {n.id for n in graph.get()} == {"Alice", "Paris"}
    graph.delete(ids=["Paris"])
    assert [n.id for n in graph.get()] == ["Alice"]
    assert cube.history(graph.item_id("Acme"))[-1].state.value == "deleted"


def test_llama_nodes_round_trip_and_delete(cube: Any) -> None:
    graph = MemOSPropertyGraphStore.from_defaults(cube)
    node = TextNode(id_="c1", text="Alice works at Acme.", metadata={"page": 1})
    graph.upsert_llama_nodes([node])
    back = graph.get_llama_nodes(["c1"])
    assert back[0].text == "Alice works at Acme." and back[0].metadata == {"page": 1}
    assert isinstance(graph.get(ids=["c1"])[0], ChunkNode)
    graph.upsert_nodes([EntityNode(name="Alice", properties={"triplet_source_id": "c1"})])
    graph.delete_llama_nodes(node_ids=["c1"])
    assert graph.get() == []


def test_vector_query_over_entities(graph: Any, cube: Any) -> None:
    graph.upsert_llama_nodes([TextNode(id_="chunk", text="Paris is a city in France.")])
    q = cube.embedder.embed_query("Paris").tolist()
    nodes, scores = graph.vector_query(VectorStoreQuery(query_embedding=q, similarity_top_k=2))
    assert nodes[0].id == "Paris" and all(isinstance(n, EntityNode) for n in nodes)
    assert scores[0] >= scores[1] and 0.5 < scores[0] <= 1.0001
    people = MetadataFilters(filters=[MetadataFilter(key="age", value=35, operator=">")])
    nodes, _ = graph.vector_query(VectorStoreQuery(query_embedding=q, similarity_top_k=5, filters=people))
    assert [n.id for n in nodes] == ["Bob"]


def test_structured_query_is_a_clear_error(graph: Any) -> None:
    assert not graph.supports_structured_queries
    with pytest.raises(StructuredQueryUnsupportedError, match="Cypher"):
        graph.structured_query("MATCH (n) RETURN n")
    with pytest.raises(NotImplementedError):
        graph.structured_query("MATCH (n) RETURN n")


class _CypherGraph:
    """A stand-in for a Cypher-capable graph backend (the Neo4j projection is another helper's; this
    checks only that the store reads the capability flag and hands the query over)."""

    supports_cypher = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def cypher(self, query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self.calls.append((query, params))
        return [{"n": 1}]


def test_structured_query_goes_to_a_graph_that_runs_cypher(graph: Any, cube: Any, monkeypatch: Any) -> None:
    capable = _CypherGraph(cube.text_mem.graph)
    monkeypatch.setattr(cube.text_mem, "graph", capable)
    assert graph.supports_structured_queries
    assert graph.structured_query("MATCH (n) RETURN count(n) AS n", {"x": 1}) == [{"n": 1}]
    assert capable.calls == [("MATCH (n) RETURN count(n) AS n", {"x": 1})]


def test_schema_summary(graph: Any) -> None:
    assert graph.get_schema() == {"node_labels": ["CITY", "ORG", "PERSON"],
                                  "relation_types": ["KNOWS", "LOCATED_IN", "WORKS_AT"]}


def test_graphs_in_namespaces_and_a_vector_store_do_not_collide(cube: Any) -> None:
    from memos_integrations.llama_index import MemOSVectorStore

    a = fill(MemOSPropertyGraphStore.from_defaults(cube, namespace="a"))
    b = MemOSPropertyGraphStore.from_defaults(cube, namespace="b")
    assert b.get() == [] and len(a.get()) == 4
    vs = MemOSVectorStore.from_defaults(cube=cube, embed_missing=True)
    node = TextNode(id_="same", text="shared chunk")
    vs.add([node])
    a.upsert_llama_nodes([node])
    assert [n.node_id for n in vs.get_nodes(["same"])] == ["same"] and a.get(ids=["same"])


def test_bad_input_writes_nothing(cube: Any) -> None:
    graph = MemOSPropertyGraphStore.from_defaults(cube)
    with pytest.raises(InvalidInputError):
        graph.upsert_relations([Relation(label="R", source_id="a", target_id="b", properties={"x": object()})])
    with pytest.raises(InvalidInputError):
        graph.upsert_relations([Relation(label="R", source_id="a", target_id="b"),
                                Relation(label="", source_id="a", target_id="c")])
    with pytest.raises(InvalidTypeError):
        graph.upsert_nodes([EntityNode(name="ok"), "not a node"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        graph.vector_query(VectorStoreQuery(query_embedding=None))
    with pytest.raises(InvalidInputError):
        graph.get_rel_map([], depth=-1)
    assert graph.get() == [] and cube.stats()["edges"] == 0


async def test_async_methods(graph: Any) -> None:
    assert triples(await graph.aget_triplets(entity_names=["Bob"])) == {("Alice", "KNOWS", "Bob")}
    assert len(await graph.aget_rel_map(await graph.aget(ids=["Alice"]), depth=2)) == 3
    await graph.aupsert_nodes([EntityNode(name="Zed")])
    await graph.aupsert_relations([Relation(label="KNOWS", source_id="Zed", target_id="Bob")])
    await graph.adelete(entity_names=["Zed"])
    assert await graph.aget(ids=["Zed"]) == []
    with pytest.raises(StructuredQueryUnsupportedError):
        await graph.astructured_query("MATCH (n) RETURN n")


def _pg_retrieve(storage_context: Any, cube: Any, query: str) -> list[str]:
    """Build a PropertyGraphIndex (pattern triplets + implicit paths) and retrieve with its vector retriever."""
    from llama_index.core import Document, PropertyGraphIndex
    from llama_index.core.indices.property_graph import ImplicitPathExtractor, VectorContextRetriever
    from llama_index.core.node_parser import SentenceSplitter

    from memos_integrations.llama_index import MemOSEmbedding
    from memos_integrations.llama_index.testing import PatternTripletExtractor, StandInLLM

    docs = [Document(id_="doc-alice", text="Alice works at Acme. Alice lives in Paris."),
            Document(id_="doc-bob", text="Bob lives in Lyon. Bob knows Alice.")]
    nodes = SentenceSplitter(chunk_size=16, chunk_overlap=0).get_nodes_from_documents(docs)
    emb = MemOSEmbedding.from_cube(cube)
    index = PropertyGraphIndex(nodes, storage_context=storage_context, embed_model=emb, llm=StandInLLM(),
                               kg_extractors=[PatternTripletExtractor(), ImplicitPathExtractor()], use_async=False)
    graph = VectorContextRetriever(index.property_graph_store, embed_model=emb, vector_store=index.vector_store,
                                   similarity_top_k=2, path_depth=1)
    # the facts LlamaIndex lists per node, and the node text; the order of the fact lines is the store's
    return sorted("\n".join(sorted(n.node.get_content().splitlines()))
                  for n in index.as_retriever(sub_retrievers=[graph]).retrieve(query))


def test_property_graph_index_retrieves_what_simple_store_does(cube: Any) -> None:
    """Endpoints upsert_relations creates (ImplicitPathExtractor's ref-doc ids) are not vector_query hits."""
    from llama_index.core import StorageContext

    from memos_integrations.llama_index import storage_context_from_cube

    query = "Where does Alice live?"
    theirs = _pg_retrieve(StorageContext.from_defaults(property_graph_store=SimplePropertyGraphStore()), cube, query)
    ours = _pg_retrieve(storage_context_from_cube(cube), cube, query)
    assert theirs and ours == theirs


def test_relation_endpoints_are_not_vector_hits(cube: Any) -> None:
    graph = MemOSPropertyGraphStore.from_defaults(cube)
    graph.upsert_nodes([EntityNode(name="Alice", label="PERSON")])
    graph.upsert_relations([Relation(label="SOURCE", source_id="Alice", target_id="doc-1")])
    assert {n.id for n in graph.get()} == {"Alice", "doc-1"}  # the endpoint exists, as in SimplePropertyGraphStore
    q = cube.embedder.embed_query("doc-1").tolist()
    nodes, _ = graph.vector_query(VectorStoreQuery(query_embedding=q, similarity_top_k=5))
    assert [n.id for n in nodes] == ["Alice"]
    graph.upsert_nodes([EntityNode(name="doc-1", label="DOC")])  # a real entity of that name is a hit again
    nodes, _ = graph.vector_query(VectorStoreQuery(query_embedding=q, similarity_top_k=5))
    assert nodes[0].id == "doc-1"
