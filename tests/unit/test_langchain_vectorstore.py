"""MemOSVectorStore beyond the standard suite: filters, scores, MMR, scope, bad input, async threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore

from memos_integrations import MemCube
from memos_integrations.errors import (
    AccessDeniedError,
    EmbedderMismatchError,
    EmptyTextError,
    InvalidFilterError,
    InvalidInputError,
    InvalidTypeError,
)
from memos_integrations.langchain import MemOSEmbeddings, MemOSVectorStore

TEAS = [
    ("Genmaicha is green tea with roasted rice.", {"topic": "tea", "year": 2021, "src": {"shelf": "a"}}),
    ("Sencha is the most popular Japanese green tea.", {"topic": "tea", "year": 2023, "src": {"shelf": "b"}}),
    ("Sencha is a popular green tea from Japan.", {"topic": "tea", "year": 2024, "src": {"shelf": "b"}}),
    ("Espresso is brewed by forcing hot water through coffee.", {"topic": "coffee", "year": 2022}),
    ("The marathon route passes the river twice.", {"topic": "sport", "year": 2020}),
]


@pytest.fixture
def store(cube: MemCube) -> MemOSVectorStore:
    s = MemOSVectorStore(cube)
    s.add_texts([t for t, _ in TEAS], [m for _, m in TEAS], ids=[f"d{n}" for n in range(len(TEAS))])
    return s


@pytest.fixture
def fake_cube(tmp_path: Path) -> MemCube:
    c = MemCube.init_from_dir(tmp_path / "fake", embedder=DeterministicFakeEmbedding(size=8))
    yield c
    c.close()


def count(cube: MemCube) -> int:
    return cube.stats()["items"]


def test_metadata_filters_with_operators_and_nested_keys(store: MemOSVectorStore) -> None:
    assert {d.id for d in store.similarity_search("tea", k=5, filter={"topic": "tea"})} == {"d0", "d1", "d2"}
    assert {d.id for d in store.similarity_search("tea", k=5, filter={"year": {"$gte": 2023}})} == {"d1", "d2"}
    assert {d.id for d in store.similarity_search("tea", k=5, filter={"topic": {"$in": ["coffee", "sport"]}})} == {"d3", "d4"}
    assert {d.id for d in store.similarity_search("tea", k=5, filter={"src.shelf": "b"})} == {"d1", "d2"}
    assert {d.id for d in store.similarity_search("tea", k=5, filter={"src": {"$exists": False}})} == {"d3", "d4"}


def test_unknown_operator_and_bad_filter_are_clear_errors(store: MemOSVectorStore) -> None:
    with pytest.raises(InvalidFilterError, match=r"unknown operator '\$regex'"):
        store.similarity_search("tea", filter={"topic": {"$regex": "t.*"}})
    with pytest.raises(InvalidFilterError, match="dict of metadata conditions"):
        store.similarity_search("tea", filter=[("topic", "tea")])  # type: ignore[arg-type]


def test_scores_are_cosine_and_relevance_is_in_unit_range(store: MemOSVectorStore, embedder: object) -> None:
    query = "Which Japanese green tea is most popular?"
    scored = store.similarity_search_with_score(query, k=5)
    assert scored[0][0].id in {"d1", "d2"}
    scores = [s for _, s in scored]
    assert scores == sorted(scores, reverse=True)
    reference = InMemoryVectorStore(MemOSEmbeddings(embedder))  # type: ignore[arg-type]
    reference.add_texts([t for t, _ in TEAS], ids=[f"d{n}" for n in range(len(TEAS))])
    expected = {d.id: s for d, s in reference.similarity_search_with_score(query, k=5)}
    for doc, score in scored:  # the same cosine LangChain's reference store computes
        assert score == pytest.approx(expected[doc.id], abs=1e-4)
    relevance = store.similarity_search_with_relevance_scores(query, k=5)
    assert all(0.0 <= s <= 1.0 for _, s in relevance)
    assert [d.id for d, _ in relevance] == [d.id for d, _ in scored]
    assert store.similarity_search_with_relevance_scores(query, k=5, score_threshold=scores[1] - 1e-6)[-1][0].id == scored[1][0].id


def test_search_is_dense_only_no_keyword_or_time_reordering(store: MemOSVectorStore) -> None:
    # "marathon" as a keyword would lift d4; a vector store ranks by similarity alone
    scored = store.similarity_search_with_score("a hot drink made from beans", k=5)
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    assert scored[0][0].id == "d3"


def test_mmr_prefers_diverse_documents(store: MemOSVectorStore) -> None:
    query = "popular Japanese green tea"
    plain = [d.id for d in store.similarity_search(query, k=2)]
    assert set(plain) == {"d1", "d2"}  # two near-duplicates
    diverse = [d.id for d in store.max_marginal_relevance_search(query, k=2, fetch_k=5, lambda_mult=0.3)]
    assert diverse[0] in {"d1", "d2"} and diverse[1] not in {"d1", "d2"}
    with pytest.raises(InvalidInputError, match="lambda_mult"):
        store.max_marginal_relevance_search(query, lambda_mult=2.0)


def test_same_id_again_is_a_new_version_and_delete_is_a_tombstone(store: MemOSVectorStore, cube: MemCube) -> None:
    store.add_texts(["Genmaicha: green tea and toasted rice."], [{"topic": "tea"}], ids=["d0"])
    assert [v.version for v in cube.history("d0")] == [1, 2]
    assert store.get_by_ids(["d0"])[0].page_content.startswith("Genmaicha:")
    store.delete(["d0", "never-added"])
    assert store.get_by_ids(["d0", "d1"]) == [Document(id="d1", page_content=TEAS[1][0], metadata=TEAS[1][1])]
    assert cube.history("d0")[-1].state.value == "deleted"
    with pytest.raises(InvalidInputError, match="never deletes everything"):
        store.delete()


def test_wrong_id_types_fail_before_anything_is_written(fake_cube: MemCube) -> None:
    store = MemOSVectorStore(fake_cube)
    with pytest.raises(InvalidTypeError, match=r"ids\[1\] is 2"):
        store.add_texts(["a", "b"], ids=["1", 2])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError, match="list of strings"):
        store.add_texts(["a"], ids="1")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="2 ids for 1 texts"):
        store.add_texts(["a"], ids=["1", "2"])
    with pytest.raises(InvalidTypeError):
        store.get_by_ids([1, 2])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError):
        store.delete([1])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError, match="not one string"):
        store.add_texts("abc")
    with pytest.raises(EmptyTextError):
        store.add_texts(["fine", "   "])
    with pytest.raises(InvalidInputError, match="JSON"):
        store.add_texts(["fine", "also fine"], [{}, {"when": object()}])
    assert count(fake_cube) == 0


def test_mismatched_embedding_dimension_is_refused(fake_cube: MemCube) -> None:
    with pytest.raises(EmbedderMismatchError, match="8 dims"):
        MemOSVectorStore(fake_cube, DeterministicFakeEmbedding(size=12))
    store = MemOSVectorStore(fake_cube)
    store.add_texts(["a"])
    with pytest.raises(EmbedderMismatchError, match="8-dim"):
        store.similarity_search_by_vector([0.1] * 5)
    with pytest.raises(EmbedderMismatchError):
        MemOSVectorStore.from_texts(["x"], DeterministicFakeEmbedding(size=12), path=fake_cube.path)
    assert count(fake_cube) == 1


def test_scope_isolates_users_and_refuses_foreign_ids(fake_cube: MemCube) -> None:
    alice = MemOSVectorStore(fake_cube, user_id="alice")
    bob = MemOSVectorStore(fake_cube, user_id="bob")
    alice.add_texts(["alice's secret"], ids=["a1"])
    bob.add_texts(["bob's note"], ids=["b1"])
    assert [d.id for d in bob.similarity_search("alice's secret", k=5)] == ["b1"]
    assert bob.get_by_ids(["a1"]) == []
    bob.delete(["a1"])  # out of scope reads as absent
    assert alice.get_by_ids(["a1"])[0].page_content == "alice's secret"
    with pytest.raises(AccessDeniedError, match="nothing was written"):
        bob.add_texts(["new", "overwrite"], ids=["b2", "a1"])
    assert fake_cube.get("a1").text == "alice's secret" and bob.get_by_ids(["b2"]) == []
    assert fake_cube.get("a1").kind.value == "document"


def test_from_texts_from_documents_and_as_retriever(tmp_path: Path, embedder: object) -> None:
    embeddings = MemOSEmbeddings(embedder)  # type: ignore[arg-type]
    store = MemOSVectorStore.from_texts([t for t, _ in TEAS], embeddings, [m for _, m in TEAS], path=tmp_path / "c")
    assert store.cube.embedder is embedder  # unwrapped: the cube records MiniLM itself, not a wrapper
    docs = [Document(page_content="Oolong is partly oxidised.", id="oolong", metadata={"topic": "tea"})]
    again = MemOSVectorStore.from_documents(docs, embeddings, path=tmp_path / "c")
    assert again.get_by_ids(["oolong"])[0].metadata == {"topic": "tea"}
    retriever = again.as_retriever(search_kwargs={"k": 1, "filter": {"topic": "tea"}})
    assert retriever.invoke("partly oxidised tea")[0].id == "oolong"
    mmr = again.as_retriever(search_type="mmr", search_kwargs={"k": 2})
    assert len(mmr.invoke("tea")) == 2
    store.cube.close()
    again.cube.close()


async def test_async_twins_run_in_worker_threads(store: MemOSVectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    search, add = store.cube.text_mem.search, store.cube.text_mem.add_items

    def spy_search(*a: object, **kw: object) -> object:
        seen.append(threading.get_ident())
        return search(*a, **kw)  # type: ignore[arg-type]

    def spy_add(*a: object, **kw: object) -> object:
        seen.append(threading.get_ident())
        return add(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(store.cube.text_mem, "search", spy_search)
    monkeypatch.setattr(store.cube.text_mem, "add_items", spy_add)
    ids = await store.aadd_documents([Document("Hojicha is roasted green tea.")])
    assert (await store.asimilarity_search("roasted green tea", k=1))[0].id == ids[0]
    await store.asimilarity_search_with_relevance_scores("tea", k=2)
    await store.amax_marginal_relevance_search("tea", k=2)
    assert [d.id for d in await store.aget_by_ids(ids)] == ids
    await store.adelete(ids)
    assert len(seen) == 4 and loop_thread not in seen


def test_reads_only_the_kind_it_writes_unless_widened(cube: MemCube) -> None:
    cube.add(messages=[{"role": "user", "content": "Maya: my tea is genmaicha."}], user_id="maya")
    cube.add(memory="Maya drinks genmaicha.", user_id="maya")
    chunk = cube.add(memory="Genmaicha chunk from a LlamaIndex document.", kind="chunk")[0]
    maya, everyone = MemOSVectorStore(cube, user_id="maya"), MemOSVectorStore(cube)
    maya.add_texts(["Genmaicha is green tea with rice."], ids=["doc"])
    assert [d.id for d in maya.similarity_search("genmaicha", k=10)] == ["doc"]
    assert [d.id for d in everyone.similarity_search("genmaicha", k=10)] == ["doc"]
    assert [d.id for d in maya.max_marginal_relevance_search("genmaicha", k=5)] == ["doc"]
    others = [i.id for i in cube.get_all(user_id="maya") if i.id != "doc"] + [chunk.id]
    assert maya.get_by_ids(others) == [] and everyone.get_by_ids(others) == []
    assert maya.delete(others) is False and everyone.delete(others) is False
    assert len(cube.get_all(user_id="maya")) == 3 and cube.get(chunk.id).text.startswith("Genmaicha chunk")
    wide = MemOSVectorStore(cube, user_id="maya", kinds=["document", "fact", "message"])
    assert len(wide.similarity_search("genmaicha", k=10)) == 3
    assert len(MemOSVectorStore(cube, kinds="all").similarity_search("genmaicha", k=10)) == 4
    with pytest.raises(InvalidInputError, match="'all'"):
        MemOSVectorStore(cube, kinds="every")


def test_an_unscoped_store_never_takes_over_a_scoped_id(fake_cube: MemCube) -> None:
    maya, unscoped = MemOSVectorStore(fake_cube, user_id="maya"), MemOSVectorStore(fake_cube)
    maya.add_texts(["maya's doc"], ids=["m1"])
    with pytest.raises(AccessDeniedError, match="not available to this store") as refused:
        unscoped.add_texts(["taken over"], ids=["m1"])
    assert "maya" not in str(refused.value)
    assert [(v.user_id, v.text) for v in fake_cube.history("m1")] == [("maya", "maya's doc")]
    assert [d.id for d in maya.similarity_search("maya's doc", k=1)] == ["m1"]
    maya.delete(["m1"])
    with pytest.raises(AccessDeniedError):  # a tombstoned id stays hers too
        unscoped.add_texts(["taken over"], ids=["m1"])
    with pytest.raises(AccessDeniedError):  # and an id of another kind is not the store's to turn into a document
        unscoped.add_texts(["x"], ids=[fake_cube.add(memory="a fact")[0].id])
    denied = [row for row in fake_cube.audit_log(10) if not row["allowed"]]
    assert denied and denied[0]["action"] == "langchain.vectorstore:write"


def test_delete_says_whether_something_was_deleted(fake_cube: MemCube) -> None:
    store = MemOSVectorStore(fake_cube, user_id="maya")
    store.add_texts(["a", "b"], ids=["a", "b"])
    assert store.delete(["nothing-here"]) is False
    assert MemOSVectorStore(fake_cube, user_id="bob").delete(["a"]) is False
    assert store.delete(["a", "nothing-here"]) is True
    assert store.delete(["a"]) is False  # already a tombstone


@pytest.mark.parametrize("query", ["", "   \n"])
def test_a_query_without_words_finds_nothing(store: MemOSVectorStore, query: str) -> None:
    assert store.similarity_search(query) == []
    assert store.similarity_search_with_relevance_scores(query) == []
    assert store.max_marginal_relevance_search(query) == []
    assert store.as_retriever().invoke(query) == []


def test_a_pasted_query_longer_than_the_cube_takes_is_searched(store: MemOSVectorStore) -> None:
    assert store.similarity_search("green tea " * 4_000, k=1)[0].metadata["topic"] == "tea"


def test_same_dimension_another_model_is_refused_by_fingerprint(fake_cube: MemCube) -> None:
    from langchain_core.embeddings import FakeEmbeddings

    with pytest.raises(EmbedderMismatchError, match="fingerprint"):
        MemOSVectorStore(fake_cube, FakeEmbeddings(size=8))  # 8 dims like the cube's, another model
    MemOSVectorStore(fake_cube, DeterministicFakeEmbedding(size=8))  # the same model, another instance: fine


@pytest.mark.parametrize("use_async", [False, True])
async def test_async_twins_return_what_the_sync_methods_return(fake_cube: MemCube, use_async: bool) -> None:
    store = MemOSVectorStore(fake_cube, user_id="maya")

    async def run(name: str, *args: Any, **kwargs: Any) -> Any:
        if use_async:
            return await getattr(store, f"a{name}")(*args, **kwargs)
        return getattr(store, name)(*args, **kwargs)

    assert await run("add_texts", ["green tea", "black tea", "coffee"], ids=["g", "b", "c"]) == ["g", "b", "c"]
    assert [d.id for d in await run("similarity_search", "green tea", k=2)] == [
        d.id for d in store.similarity_search("green tea", k=2)]
    assert await run("similarity_search_with_relevance_scores", "tea", k=3) == \
        store.similarity_search_with_relevance_scores("tea", k=3)
    assert await run("max_marginal_relevance_search", "tea", k=2) == store.max_marginal_relevance_search("tea", k=2)
    assert await run("similarity_search", "  ") == []
    assert await run("get_by_ids", ["g", "x"]) == store.get_by_ids(["g", "x"])
    assert await run("delete", ["x"]) is False
    assert await run("delete", ["g"]) is True


def test_ids_are_normalised_once_so_7_and_the_string_7_are_one_user(fake_cube: MemCube) -> None:
    from langchain_core.runnables import RunnableLambda

    MemOSVectorStore(fake_cube, user_id=7).add_texts(["seven's doc"], ids=["s"])  # type: ignore[arg-type]
    assert fake_cube.get("s").user_id == "7"
    found = RunnableLambda(lambda _: MemOSVectorStore(fake_cube, user_id="7").get_by_ids(["s"])).invoke(
        None, config={"configurable": {"user_id": 7}})
    assert [d.id for d in found] == ["s"]
