"""LlamaIndex face speed: a ``VectorStoreIndex`` over 2,000 chunks on three storages, in one run.

Run::

    .venv/bin/python -m benchmarks.bench_llama_index          # --chunks 2000 --queries 200

The same 2,000 LoCoMo-derived chunks (dialogue turns and 3-turn windows of the dev split, each a
``TextNode`` with ``conv`` and ``session`` metadata) go into a ``VectorStoreIndex`` on:

- LlamaIndex's default storage (``SimpleVectorStore`` + ``SimpleDocumentStore``, in memory),
- ``llama-index-vector-stores-chroma`` (``ChromaVectorStore`` on a persistent Chroma client),
- ``storage_context_from_cube`` (every store in the cube's SQLite + its Chroma index).

All use the same embedder (the cube's MiniLM through ``MemOSEmbedding``). The chunks are embedded once
up front, so "build" measures the storage, not the shared embedder, whose cost is printed on its own
line. Queries are LoCoMo questions, embedded up front too, run through ``index.as_retriever(k=10)``;
p50/p95 latency without and with a metadata filter (one conversation of five).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from llama_index.core import StorageContext, VectorStoreIndex  # noqa: E402
from llama_index.core.schema import QueryBundle, TextNode  # noqa: E402
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters  # noqa: E402

from benchmarks.common import locomo, pct, sessions, table  # noqa: E402
from memos_integrations import MemCube  # noqa: E402
from memos_integrations.llama_index import MemOSEmbedding, storage_context_from_cube  # noqa: E402
from memos_integrations.textual.embed import MiniLMEmbedder  # noqa: E402


def chunks_and_questions(n_chunks: int, n_queries: int) -> tuple[list[TextNode], list[str]]:
    nodes: list[TextNode] = []
    questions: list[str] = []
    for c, conv in enumerate(locomo()):
        questions += [qa["question"] for qa in conv.get("qa", []) if qa.get("question")]
        for key, _, turns in sessions(conv):
            lines = [f"{t['speaker']}: {t['text']}" for t in turns]
            for i, line in enumerate(lines):
                nodes.append(TextNode(text=line, metadata={"conv": c, "session": key}))
                if i + 2 < len(lines):
                    nodes.append(TextNode(text="\n".join(lines[i:i + 3]), metadata={"conv": c, "session": key}))
    step = max(1, len(nodes) // n_chunks)
    return nodes[::step][:n_chunks], questions[:n_queries]


def storages(tmp: str, embedder: Any) -> dict[str, Callable[[], tuple[StorageContext, Callable[[], None]]]]:
    def simple() -> tuple[StorageContext, Callable[[], None]]:
        return StorageContext.from_defaults(), lambda: None

    def chroma() -> tuple[StorageContext, Callable[[], None]]:
        import chromadb
        from chromadb.config import Settings
        from llama_index.vector_stores.chroma import ChromaVectorStore

        client = chromadb.PersistentClient(path=os.path.join(tmp, "chroma"), settings=Settings(anonymized_telemetry=False))
        collection = client.get_or_create_collection("bench", embedding_function=None,
                                                      configuration={"hnsw": {"space": "cosine"}})
        return StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection)), lambda: None

    def cube() -> tuple[StorageContext, Callable[[], None]]:
        c = MemCube.init_from_dir(os.path.join(tmp, "cube"), embedder=embedder)
        return storage_context_from_cube(c), c.close

    return {"SimpleVectorStore (default)": simple, "ChromaVectorStore": chroma, "MemOS cube": cube}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()

    embedder = MiniLMEmbedder()
    emb = MemOSEmbedding.from_defaults(embedder)
    nodes, questions = chunks_and_questions(args.chunks, args.queries)
    t0 = time.perf_counter()
    vectors = emb.get_text_embedding_batch([n.get_content(metadata_mode="embed") for n in nodes])
    embed_s = time.perf_counter() - t0
    qvecs = [emb.get_query_embedding(q) for q in questions]
    for n, v in zip(nodes, vectors, strict=True):
        n.embedding = v
    flt = MetadataFilters(filters=[MetadataFilter(key="conv", value=2)])

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in storages(tmp, embedder).items():
            sc, close = make()
            fresh = [n.model_copy(deep=True) for n in nodes]
            t0 = time.perf_counter()
            index = VectorStoreIndex(fresh, storage_context=sc, embed_model=emb, insert_batch_size=2048)
            build = time.perf_counter() - t0
            lat: dict[str, list[float]] = {"plain": [], "filter": []}
            for kind, kw in (("plain", {}), ("filter", {"filters": flt})):
                retriever = index.as_retriever(similarity_top_k=10, **kw)
                retriever.retrieve(QueryBundle(questions[0], embedding=qvecs[0]))  # warm-up
                for q, v in zip(questions, qvecs, strict=True):
                    t0 = time.perf_counter()
                    hits = retriever.retrieve(QueryBundle(q, embedding=v))
                    lat[kind].append((time.perf_counter() - t0) * 1000)
                    assert hits, f"{name} returned nothing"
            rows.append([name, f"{build:.2f}", f"{len(nodes) / build:,.0f}",
                         f"{pct(lat['plain'], 50):.1f}", f"{pct(lat['plain'], 95):.1f}",
                         f"{pct(lat['filter'], 50):.1f}", f"{pct(lat['filter'], 95):.1f}"])
            close()
    print(f"\nVectorStoreIndex over {len(nodes):,} chunks, {len(questions)} queries, k=10 "
          f"(MiniLM embedding, shared by all: {embed_s:.1f} s for the chunks, {len(nodes) / embed_s:,.0f} chunks/s)\n")
    print(table(["storage", "build s", "chunks/s", "query p50 ms", "query p95 ms", "filtered p50 ms",
                 "filtered p95 ms"], rows))


if __name__ == "__main__":
    main()
