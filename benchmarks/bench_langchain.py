"""LangChain face speed: MemOSRetriever latency on LoCoMo, and MemOSVectorStore beside
langchain-core's ``InMemoryVectorStore`` and langchain-chroma's ``Chroma`` at 10k documents.

Run::

    .venv/bin/python -m benchmarks.bench_langchain               # --docs 10000 --queries 200

1. **Retriever**: one LoCoMo dev conversation read into a cube (one item per turn), then every
   distinct question of that conversation through ``MemOSRetriever.invoke`` (balanced plan, k=10).
   Latency includes the query embedding (each question is new to the embedder's query cache).
   Wall time and process CPU time are both printed: on a shared machine the CPU time is the figure
   other processes' load does not inflate. Evidence recall@10 is a check that fast is also right.
2. **Vector stores**: the same 10k LoCoMo-derived texts (turns, 2- and 3-turn windows, observations,
   summaries, questions) into each store, in batches of 1000, with the same embedder: our MiniLM
   wrapped as LangChain ``Embeddings``. The texts are embedded once up front (and cached under
   ``~/.cache/memos-integrations``) and served from a lookup, so "add docs/s" measures the store
   itself; the shared MiniLM rate, timed on 512 of the texts, is printed on its own line (end to
   end, add rate = 1 / (1/store + 1/embedder)). Search p50/p95 is by vector, k=10,
   over precomputed query vectors (query embedding is the separate, shared line), with and
   without a metadata filter (one conversation of five).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import numpy as np  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore, VectorStore  # noqa: E402

from memos_integrations import MemCube  # noqa: E402
from memos_integrations.langchain import MemOSEmbeddings, MemOSRetriever, MemOSVectorStore  # noqa: E402
from memos_integrations.textual.embed import MiniLMEmbedder  # noqa: E402

from .common import locomo, pct, sessions, table, turn_messages  # noqa: E402


class LookupEmbeddings(Embeddings):
    """Serves precomputed vectors (the same MiniLM vectors for every store); embeds anything else."""

    def __init__(self, inner: Embeddings, table: dict[str, list[float]]) -> None:
        self.inner, self.table = inner, table

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self.table]
        if missing:
            self.table.update(zip(missing, self.inner.embed_documents(missing), strict=True))
        return [self.table[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def corpus(data: list[dict[str, Any]], n: int) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """``n`` distinct texts with {"conv", "type"} metadata, and every question of the split."""
    texts: dict[str, dict[str, Any]] = {}
    questions: list[str] = []

    def put(text: str, conv: str, kind: str) -> None:
        if text.strip() and text not in texts:
            texts[text] = {"conv": conv, "type": kind}

    for width in (1, 2, 3):
        for conv in data:
            turns = [t for _, _, ts in sessions(conv) for t in turn_messages(ts)]
            for i in range(len(turns) - width + 1):
                put(" ".join(f"{t['name']}: {t['content']}" for t in turns[i : i + width]), conv["sample_id"], f"turns{width}")
    for conv in data:
        for speakers in conv["observation"].values():
            for facts in speakers.values():
                for fact, _ in facts:
                    put(fact, conv["sample_id"], "observation")
        for summary in conv["session_summary"].values():
            put(summary, conv["sample_id"], "summary")
        for qa in conv["qa"]:
            questions.append(qa["question"])
            put(qa["question"], conv["sample_id"], "question")
    if len(texts) < n:
        raise SystemExit(f"the LoCoMo dev split yields {len(texts)} distinct texts, fewer than --docs {n}")
    chosen = list(texts)[:n]
    return chosen, [texts[t] for t in chosen], list(dict.fromkeys(questions))


def bench_retriever(data: list[dict[str, Any]], embedder: MiniLMEmbedder, workdir: Path) -> list[list[Any]]:
    conv = data[0]
    cube = MemCube.init_from_dir(workdir / "locomo", embedder=embedder)
    user = conv["sample_id"]
    n_turns = 0
    for key, when, turns in sessions(conv):
        cube.add(messages=turn_messages(turns), user_id=user, session_id=key, timestamp=when)
        n_turns += len(turns)
    retriever = MemOSRetriever(cube=cube, user_id=user, k=10)
    qas = list({qa["question"]: qa for qa in conv["qa"]}.values())
    for warm in ("warm-up one", "warm-up two", "warm-up three"):
        retriever.invoke(warm)
    times, cpu, found = [], [], 0
    for qa in qas:
        start, start_cpu = time.perf_counter(), time.process_time()
        docs = retriever.invoke(qa["question"])
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        sources = {s for d in docs for s in d.metadata["sources"]}
        found += bool(sources & set(qa.get("evidence") or []))
    cube.close()
    ms, cpu_ms = [t * 1000 for t in times], [t * 1000 for t in cpu]
    return [[f"MemOSRetriever, LoCoMo {user} ({n_turns} turns, {len(qas)} questions)", f"{pct(ms, 50):.1f}",
             f"{pct(ms, 95):.1f}", f"{pct(cpu_ms, 50):.1f}", f"{pct(cpu_ms, 95):.1f}", f"{found / len(qas):.3f}"]]


def bench_stores(
    texts: list[str], metas: list[dict[str, Any]], questions: list[str], n_queries: int, workdir: Path,
    embedder: MiniLMEmbedder,
) -> tuple[list[list[Any]], str]:
    base = MemOSEmbeddings(embedder)
    sample = texts[:512]
    start = time.perf_counter()
    base.embed_documents(sample)
    embed_rate = len(sample) / (time.perf_counter() - start)
    vectors = _cached_vectors(texts, base, embedder.fingerprint)
    queries = questions[:n_queries]
    query_times = []
    query_vectors = []
    fresh = MiniLMEmbedder()  # the same weights with an empty query cache: every query is really embedded
    for q in queries:
        t0 = time.perf_counter()
        query_vectors.append(fresh.embed_query(q).tolist())
        query_times.append((time.perf_counter() - t0) * 1000)
    shared = LookupEmbeddings(base, dict(zip(texts, vectors, strict=True)))
    conv0 = metas[0]["conv"]

    def memos() -> tuple[VectorStore, Callable[[Any], Any]]:
        cube = MemCube.init_from_dir(workdir / "memos", embedder=shared)
        return MemOSVectorStore(cube), lambda c: {"conv": c}

    def in_memory() -> tuple[VectorStore, Callable[[Any], Any]]:
        return InMemoryVectorStore(shared), lambda c: (lambda doc: doc.metadata.get("conv") == c)

    def chroma() -> tuple[VectorStore, Callable[[Any], Any]]:
        from langchain_chroma import Chroma

        store = Chroma("bench", embedding_function=shared, persist_directory=str(workdir / "chroma"),
                       collection_metadata={"hnsw:space": "cosine"})
        return store, lambda c: {"conv": c}

    rows = []
    for name, make in (("MemOSVectorStore (SQLite + Chroma, persistent)", memos),
                       ("InMemoryVectorStore (langchain-core)", in_memory),
                       ("Chroma (langchain-chroma, persistent)", chroma)):
        store, where = make()
        start = time.perf_counter()
        for i in range(0, len(texts), 1000):
            store.add_texts(texts[i : i + 1000], metas[i : i + 1000])
        add_rate = len(texts) / (time.perf_counter() - start)
        plain = _search_ms(lambda v, s=store: s.similarity_search_by_vector(v, k=10), query_vectors)
        flt = where(conv0)
        filtered = _search_ms(lambda v, s=store, f=flt: s.similarity_search_by_vector(v, k=10, filter=f), query_vectors)
        end_to_end = 1 / (1 / add_rate + 1 / embed_rate)
        rows.append([name, f"{add_rate:.0f}", f"{end_to_end:.0f}", f"{pct(plain, 50):.2f}", f"{pct(plain, 95):.2f}",
                     f"{pct(filtered, 50):.2f}", f"{pct(filtered, 95):.2f}"])
    note = (f"Shared by all three: MiniLM embedding {embed_rate:.0f} docs/s (batch 64); "
            f"query embedding p50 {pct(query_times, 50):.1f} ms, p95 {pct(query_times, 95):.1f} ms.")
    return rows, note


def _cached_vectors(texts: list[str], embeddings: Embeddings, fingerprint: str) -> list[list[float]]:
    """The documents' MiniLM vectors, computed once and kept outside the project (a cache, not data)."""
    key = hashlib.sha256(("\n".join(texts) + fingerprint).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "memos-integrations"
    path = cache / f"bench_langchain_{key}.npy"
    if path.exists():
        return np.load(path).tolist()  # type: ignore[no-any-return]
    vectors = np.asarray(embeddings.embed_documents(texts), dtype=np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors.tolist()  # type: ignore[no-any-return]


def _search_ms(search: Callable[[list[float]], Sequence[Document]], vectors: list[list[float]]) -> list[float]:
    for v in vectors[:5]:
        search(v)  # warm caches and lazy loads
    times = []
    for v in vectors:
        start = time.perf_counter()
        search(v)
        times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args(argv)
    data = locomo()
    embedder = MiniLMEmbedder()
    _ = embedder.fingerprint
    texts, metas, questions = corpus(data, args.docs)
    with tempfile.TemporaryDirectory(prefix="bench-langchain-") as tmp:
        retriever_rows = bench_retriever(data, embedder, Path(tmp))
        store_rows, note = bench_stores(texts, metas, questions, args.queries, Path(tmp), embedder)
    print(table(["retriever (query embedding included)", "p50 ms", "p95 ms (target <= 25)", "CPU p50 ms",
                 "CPU p95 ms", "evidence recall@10"], retriever_rows))
    print()
    print(table(
        [f"vector store, {len(texts)} docs", "add docs/s (store)", "add docs/s (with MiniLM)", "search p50 ms",
         "search p95 ms", "filtered p50 ms", "filtered p95 ms"],
        store_rows,
    ))
    print()
    print(note)
    print(f"Search: {min(args.queries, len(questions))} LoCoMo questions, k=10, by vector; filter: one conversation of five. "
          f"CPU: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end.")


if __name__ == "__main__":
    main()
