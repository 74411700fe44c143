"""MemOSVectorStore side by side with LlamaIndex's SimpleVectorStore on the same nodes.

Every ``FilterOperator`` and ``FilterCondition`` (and nesting, which SimpleVectorStore lacks: there the
expected ids come from set algebra over its answers) must select the same nodes in the same order.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores import SimpleVectorStore  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from memos_integrations.errors import EmbedderMismatchError, InvalidFilterError, InvalidInputError  # noqa: E402
from memos_integrations.llama_index import MemOSVectorStore  # noqa: E402

DIM = 384
META: list[dict[str, Any]] = [
    {"author": "ann", "year": 2019, "rating": 4.5, "tags": ["tea", "green"], "title": "Green Tea Basics"},
    {"author": "bob", "year": 2020, "rating": 3.0, "tags": ["tea"], "title": "black tea"},
    {"author": "ann", "year": 2021, "rating": 5.0, "tags": ["coffee", "green"], "title": "Coffee"},
    {"author": "cy", "year": 2018, "tags": [], "title": ""},
    {"author": "bob", "rating": 2.5, "title": "Oolong notes"},
    {"year": 2022, "tags": ["tea", "coffee", "green"], "title": "Tea and Coffee"},
]


def make_nodes() -> list[TextNode]:
    rng = np.random.default_rng(7)
    nodes = []
    for i, meta in enumerate(META):
        vec = rng.normal(size=DIM)
        node = TextNode(id_=f"n{i}", text=f"text of node {i} {meta.get('title', '')}", metadata=dict(meta),
                        embedding=(vec / np.linalg.norm(vec)).tolist())
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i % 2}")
        nodes.append(node)
    return nodes


@pytest.fixture
def stores(cube: Any) -> tuple[MemOSVectorStore, SimpleVectorStore, list[float]]:
    ours, simple = MemOSVectorStore.from_defaults(cube=cube), SimpleVectorStore()
    ours.add(make_nodes())
    simple.add(make_nodes())
    q = np.random.default_rng(1).normal(size=DIM)
    return ours, simple, (q / np.linalg.norm(q)).tolist()


def ids(store: Any, q: list[float], filters: MetadataFilters | None) -> list[str]:
    return list(store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=len(META), filters=filters)).ids)


F = MetadataFilter
LEAVES = [
    F(key="author", value="ann"),
    F(key="author", value="ann", operator=FilterOperator.NE),
    F(key="year", value=2019, operator=FilterOperator.GT),
    F(key="year", value=2020, operator=FilterOperator.GTE),
    F(key="rating", value=4.5, operator=FilterOperator.LT),
    F(key="rating", value=3.0, operator=FilterOperator.LTE),
    F(key="author", value=["ann", "cy"], operator=FilterOperator.IN),
    F(key="year", value=[2019, 2022], operator=FilterOperator.NIN),
    F(key="tags", value=["coffee", "black"], operator=FilterOperator.ANY),
    F(key="tags", value=["tea", "green"], operator=FilterOperator.ALL),
    F(key="title", value="Tea", operator=FilterOperator.TEXT_MATCH),
    F(key="title", value="TEA", operator=FilterOperator.TEXT_MATCH_INSENSITIVE),
    F(key="tags", value="green", operator=FilterOperator.CONTAINS),
    F(key="title", value="Co", operator=FilterOperator.CONTAINS),
    F(key="tags", value=None, operator=FilterOperator.IS_EMPTY),
    F(key="year", value=None, operator=FilterOperator.IS_EMPTY),
]


def test_every_operator_is_covered() -> None:
    assert {f.operator for f in LEAVES} == set(FilterOperator)


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda f: f"{f.key} {f.operator.value}")
def test_each_operator_matches_simple(stores: Any, leaf: MetadataFilter) -> None:
    ours, simple, q = stores
    flt = MetadataFilters(filters=[leaf])
    assert ids(ours, q, flt) == ids(simple, q, flt)


@pytest.mark.parametrize("condition", list(FilterCondition))
@pytest.mark.parametrize("pair", [(0, 2), (8, 10), (1, 14), (3, 12)])
def test_each_condition_matches_simple(stores: Any, condition: FilterCondition, pair: tuple[int, int]) -> None:
    ours, simple, q = stores
    flt = MetadataFilters(filters=[LEAVES[pair[0]], LEAVES[pair[1]]], condition=condition)
    assert ids(ours, q, flt) == ids(simple, q, flt)


def test_nested_filters_match_set_algebra_over_simple(stores: Any) -> None:
    ours, simple, q = stores
    a, b, c = (MetadataFilters(filters=[LEAVES[i]]) for i in (0, 8, 11))
    inner = MetadataFilters(filters=[LEAVES[8], LEAVES[11]], condition=FilterCondition.OR)
    nested = MetadataFilters(filters=[LEAVES[0], inner], condition=FilterCondition.NOT)
    every = set(ids(simple, q, None))
    expected = every - (set(ids(simple, q, a)) | set(ids(simple, q, b)) | set(ids(simple, q, c)))
    assert set(ids(ours, q, nested)) == expected


def test_default_mode_scores_are_cosine_like_simple(stores: Any) -> None:
    ours, simple, q = stores
    a = ours.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3))
    b = simple.query(VectorStoreQuery(query_embedding=q, similarity_top_k=3))
    assert a.ids == b.ids
    assert np.allclose(a.similarities, b.similarities, atol=1e-5)
    assert [n.node_id for n in a.nodes] == a.ids and a.nodes[0].metadata == META[int(a.ids[0][1:])]


def test_node_ids_and_doc_ids_restrict(stores: Any) -> None:
    ours, _, q = stores
    r = ours.query(VectorStoreQuery(query_embedding=q, similarity_top_k=10, node_ids=["n1", "n2"]))
    assert set(r.ids) == {"n1", "n2"}
    r = ours.query(VectorStoreQuery(query_embedding=q, similarity_top_k=10, doc_ids=["doc1"]))
    assert set(r.ids) == {"n1", "n3", "n5"}


def test_hybrid_and_sparse_use_the_keyword_index(stores: Any) -> None:
    ours, _, q = stores
    sparse = ours.query(VectorStoreQuery(query_str="oolong", similarity_top_k=2, mode=VectorStoreQueryMode.SPARSE))
    assert sparse.ids == ["n4"]
    hybrid = ours.query(VectorStoreQuery(query_str="oolong notes", query_embedding=q, similarity_top_k=6,
                                         mode=VectorStoreQueryMode.HYBRID, alpha=0.2))
    assert hybrid.ids[0] == "n4" and len(hybrid.ids) == 6
    dense_only = ours.query(VectorStoreQuery(query_str="oolong", query_embedding=q, similarity_top_k=6,
                                             mode=VectorStoreQueryMode.HYBRID, alpha=1.0))
    assert dense_only.ids == ids(ours, q, None)


def test_mmr_diversifies(cube: Any) -> None:
    store = MemOSVectorStore.from_defaults(cube=cube)
    base = np.zeros(DIM)
    base[0] = 1.0
    near = base.copy()
    near[1] = 0.05
    other = np.zeros(DIM)
    other[0], other[2] = 0.7, 0.7
    store.add([TextNode(id_=i, text=i, embedding=(v / np.linalg.norm(v)).tolist())
               for i, v in (("a", base), ("a2", near), ("b", other))])
    q = base.tolist()
    plain = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=2))
    mmr = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=2, mode=VectorStoreQueryMode.MMR,
                                       mmr_threshold=0.3))
    assert plain.ids == ["a", "a2"] and mmr.ids == ["a", "b"]


def test_get_delete_and_clear(stores: Any, cube: Any) -> None:
    ours, simple, q = stores
    got = ours.get_nodes(node_ids=["n2", "n0"])
    assert [n.node_id for n in got] == ["n2", "n0"]
    for node in got:  # the embeddings come back, unit-length: the same direction SimpleVectorStore keeps
        theirs = np.asarray(simple.get(node.node_id), dtype=np.float32)
        assert np.allclose(np.asarray(node.embedding), theirs / np.linalg.norm(theirs), atol=1e-6)
    assert {n.node_id for n in ours.get_nodes(filters=MetadataFilters(filters=[LEAVES[0]]))} == {"n0", "n2"}
    ours.delete("doc0")  # n0, n2, n4
    assert set(ids(ours, q, None)) == {"n1", "n3", "n5"}
    assert cube.history(ours.item_id("n0"))[-1].state.value == "deleted"  # a tombstone, not a silent loss
    ours.delete_nodes(filters=MetadataFilters(filters=[F(key="year", value=2020)]))
    assert set(ids(ours, q, None)) == {"n3", "n5"}
    ours.delete_nodes(node_ids=[])  # an empty id list deletes nothing
    assert len(ours.get_nodes()) == 2
    ours.clear()
    assert ours.get_nodes() == [] and ids(ours, q, None) == []


def test_namespaces_and_users_are_separate(cube: Any) -> None:
    a = MemOSVectorStore.from_defaults(cube=cube, namespace="a")
    b = MemOSVectorStore.from_defaults(cube=cube, namespace="b", user_id="u1")
    a.add(make_nodes()[:2])
    b.add([TextNode(id_="other", text="other", embedding=make_nodes()[0].embedding)])
    assert {n.node_id for n in a.get_nodes()} == {"n0", "n1"} and [n.node_id for n in b.get_nodes()] == ["other"]
    assert cube.get(b.item_id("other")).user_id == "u1"


def test_same_id_again_is_a_new_version(cube: Any) -> None:
    store = MemOSVectorStore.from_defaults(cube=cube)
    node = make_nodes()[0]
    store.add([node])
    node.text = "changed"
    store.add([node])
    assert store.get_nodes(["n0"])[0].text == "changed" and len(cube.history(store.item_id("n0"))) == 2


async def test_async_runs_off_the_event_loop(stores: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ours, _, q = stores
    seen: list[int] = []
    original = type(ours).query

    def spy(self: Any, query: Any, **kw: Any) -> Any:
        seen.append(threading.get_ident())
        return original(self, query, **kw)

    monkeypatch.setattr(type(ours), "query", spy)
    results = await asyncio.gather(*(ours.aquery(VectorStoreQuery(query_embedding=q, similarity_top_k=2))
                                     for _ in range(3)))
    assert all(r.ids == results[0].ids for r in results)
    assert seen and threading.get_ident() not in seen
    await ours.async_add([TextNode(id_="x", text="x", embedding=q)])
    assert [n.node_id for n in await ours.aget_nodes(["x"])] == ["x"]
    await ours.adelete_nodes(["x"])
    await ours.adelete("doc0")
    await ours.aclear()
    assert await ours.aget_nodes() == []


# -- bad input: clear errors, nothing written -------------------------------------------------------

def test_nodes_without_embeddings_are_refused_whole(cube: Any) -> None:
    store = MemOSVectorStore.from_defaults(cube=cube)
    nodes = make_nodes()
    nodes[3].embedding = None
    with pytest.raises(InvalidInputError, match="no embedding"):
        store.add(nodes)
    assert store.get_nodes() == [] and cube.stats()["items"] == 0


def test_embed_missing_uses_the_cube_embedder(cube: Any) -> None:
    store = MemOSVectorStore.from_defaults(cube=cube, embed_missing=True)
    store.add([TextNode(id_="t", text="green tea with roasted rice")])
    q = cube.embedder.embed_query("roasted rice tea").tolist()
    assert store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=1)).similarities[0] > 0.5


def test_wrong_dimension_is_refused(cube: Any) -> None:
    store = MemOSVectorStore.from_defaults(cube=cube)
    with pytest.raises(EmbedderMismatchError):
        store.add([TextNode(id_="t", text="t", embedding=[0.1] * 8)])
    with pytest.raises(EmbedderMismatchError):
        store.query(VectorStoreQuery(query_embedding=[0.1] * 8, similarity_top_k=1))
    assert cube.stats()["items"] == 0


@pytest.mark.parametrize(
    "flt",
    [
        MetadataFilter.model_construct(key="a", value=1, operator="regex"),
        F(key="a", value=[1, 2], operator=FilterOperator.GT),
        F(key="a", value=1, operator=FilterOperator.IN),
        F(key="a", value=None, operator=FilterOperator.EQ),
        F(key="a b", value=1),
        F(key="a", value=["x"], operator=FilterOperator.TEXT_MATCH),
    ],
)
def test_unsupported_filters_are_clear_errors(stores: Any, flt: MetadataFilter) -> None:
    ours, _, q = stores
    with pytest.raises(InvalidFilterError):
        ids(ours, q, MetadataFilters(filters=[flt]))


@pytest.mark.parametrize(
    ("mode", "kw"),
    [(VectorStoreQueryMode.SVM, {}), (VectorStoreQueryMode.DEFAULT, {"query_embedding": None}),
     (VectorStoreQueryMode.SPARSE, {"query_str": None}), (VectorStoreQueryMode.HYBRID, {"alpha": 2.0})],
)
def test_bad_queries_are_clear_errors(stores: Any, mode: VectorStoreQueryMode, kw: dict[str, Any]) -> None:
    ours, _, q = stores
    args = {"query_embedding": q, "query_str": "tea", "similarity_top_k": 2, "mode": mode, **kw}
    with pytest.raises(InvalidInputError):
        ours.query(VectorStoreQuery(**args))
