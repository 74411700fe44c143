"""Indexes built on ``storage_context_from_cube`` load again from the reopened cube with the same answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import (  # noqa: E402
    Document,
    PropertyGraphIndex,
    SummaryIndex,
    VectorStoreIndex,
    load_index_from_storage,  # noqa: E402
)
from llama_index.core.indices.property_graph import VectorContextRetriever  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402

from memos_integrations import MemCube  # noqa: E402
from memos_integrations.llama_index import MemOSEmbedding, storage_context_from_cube  # noqa: E402
from memos_integrations.llama_index.testing import PatternTripletExtractor, StandInLLM  # noqa: E402

DOCS = [
    Document(id_="doc-alice", text="Alice works at Acme. Alice lives in Paris. She drinks genmaicha every morning."),
    Document(id_="doc-acme", text="Acme builds robots. Acme employs Bob. The robots sort parcels at night."),
    Document(id_="doc-bob", text="Bob lives in Lyon. Bob knows Alice. Bob prefers black coffee."),
]
QUERIES = ["Where does Alice live?", "What does Acme build?", "What does Bob drink?"]


def answers(cube: Any, build: bool) -> dict[str, Any]:
    """Build (or load) the three indexes on the cube and answer the queries with each."""
    emb = MemOSEmbedding.from_cube(cube)
    sc = storage_context_from_cube(cube)
    pg_kw = {"kg_extractors": [PatternTripletExtractor()], "embed_model": emb, "llm": StandInLLM()}
    if build:
        nodes = SentenceSplitter(chunk_size=16, chunk_overlap=0).get_nodes_from_documents(DOCS)
        vec = VectorStoreIndex(nodes, storage_context=sc, embed_model=emb)
        vec.set_index_id("vec")
        summary = SummaryIndex(nodes, storage_context=sc)
        summary.set_index_id("sum")
        pg = PropertyGraphIndex(nodes, storage_context=sc, use_async=False, **pg_kw)
        pg.set_index_id("pg")
    else:
        vec = load_index_from_storage(sc, index_id="vec", embed_model=emb)
        summary = load_index_from_storage(sc, index_id="sum")
        pg = load_index_from_storage(sc, index_id="pg", use_async=False, **pg_kw)
    assert (type(vec), type(summary), type(pg)) == (VectorStoreIndex, SummaryIndex, PropertyGraphIndex)
    graph = VectorContextRetriever(pg.property_graph_store, embed_model=emb, similarity_top_k=2, path_depth=1)
    out: dict[str, Any] = {}
    for q in QUERIES:
        out[f"vec {q}"] = [(n.node_id, round(n.score or 0, 5)) for n in vec.as_retriever(similarity_top_k=2).retrieve(q)]
        out[f"hybrid {q}"] = [n.node_id for n in vec.as_retriever(similarity_top_k=2, vector_store_query_mode="hybrid").retrieve(q)]
        out[f"pg {q}"] = sorted(n.node.get_content() for n in pg.as_retriever(sub_retrievers=[graph]).retrieve(q))
    out["summary"] = [n.node_id for n in summary.as_retriever().retrieve(QUERIES[0])]
    out["answer"] = str(vec.as_query_engine(llm=StandInLLM(), similarity_top_k=1).query(QUERIES[0]))
    return out


def test_indexes_answer_the_same_after_reopening(tmp_path: Path, embedder: Any) -> None:
    with MemCube.init_from_dir(tmp_path / "cube", embedder=embedder) as cube:
        before = answers(cube, build=True)
    with MemCube.init_from_dir(tmp_path / "cube", embedder=embedder) as cube:
        after = answers(cube, build=False)
    assert after == before
    assert before["vec Where does Alice live?"][0][1] > 0.3
    assert any("Paris" in t for t in before["pg Where does Alice live?"])
    assert len(before["summary"]) >= 3 and "Paris" in before["answer"]
