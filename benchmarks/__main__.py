"""`make bench`: every benchmark, one after another, each printing its table.

Core first (LoCoMo retrieval quality, ingest and latency; 100k-item scale; what the guarantees
cost), then each face's own benchmark. Run one alone with `python -m benchmarks.<name>`.
"""

from __future__ import annotations

import subprocess
import sys

BENCHES = [
    ("core: LoCoMo retrieval quality, ingest, latency", ["-m", "benchmarks.bench_retrieval"]),
    ("core: organising cost (partitions, tree, links)", ["-m", "benchmarks.bench_organize"]),
    ("core: 100k items", ["-m", "benchmarks.bench_scale"]),
    ("core: engine CPU per search and per add", ["-m", "benchmarks.bench_engine_cpu"]),
    ("core: where a fast add's time goes", ["-m", "benchmarks.bench_add_path"]),
    ("core: CPU per int8 query embedding, reference vs lean forward", ["-m", "benchmarks.bench_query_embed"]),
    ("core: what the trust guarantees cost", ["-m", "benchmarks.bench_guarantees"]),
    ("storage: SQLite vs PostgreSQL cube, writers, scale", ["-m", "benchmarks.bench_postgres"]),
    ("service: REST under load", ["-m", "benchmarks.bench_service"]),
    ("service: CPU per request of the rate limit and the access log", ["-m", "benchmarks.bench_service_costs"]),
    ("service: a RemoteCube face page with its conflict notes, one request or two",
     ["-m", "benchmarks.bench_remote_conflict_page", "--pages", "300"]),
    ("LangChain", ["-m", "benchmarks.bench_langchain"]),
    ("LangGraph", ["-m", "benchmarks.bench_langgraph"]),
    ("tool memory: recording overhead per tool call", ["-m", "benchmarks.bench_toolmem"]),
    ("LlamaIndex", ["-m", "benchmarks.bench_llama_index"]),
    ("LLM reader: cost, modes, contradictions", ["-m", "benchmarks.bench_reader"]),
    ("local models: KV caches, preloading (random-weight and the real SmolLM2)", ["-m", "benchmarks.bench_local", "--threads", "1", "--real", "--cpu-time"]),
    ("local models: parametric recall and adapter routing (real SmolLM2; minutes of CPU per point)",
     ["-m", "benchmarks.bench_parametric", "--threads", "1", "--cpu-time", "--points", "qa-attn-r8", "--every", "2"]),
]


def main() -> int:
    only = sys.argv[1:]
    failed = 0
    for title, args in BENCHES:
        if only and not any(o in " ".join(args) for o in only):
            continue
        print(f"\n## {title}\n\n$ python {' '.join(args)}", flush=True)
        failed += subprocess.call([sys.executable, *args]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
