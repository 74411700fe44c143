"""What ``late`` costs in the service (server/late_embed.py, docs/service.md "late in the service").

A. The embedding child's own seconds per request (its reply's ``s``) and the parent's round trip, for each pass a
   request can ask for: a plain search's int8 query, an fp32 query, a late search's fp32 query with its token
   vectors, a one-text add's document pass without (before) and with (now) its token vectors.
B. Through REST (TestClient, one request at a time) on one LoCoMo conversation added turn by turn: a search's wall
   time and the child's CPU per search, ``learned`` against ``late``, and how often their top 10 differ.

Run: ``nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.bench_late_service [--turns 200] [--questions 60]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import locomo, pct, sessions, table, turn_messages


def _child(process: Any, tok: Any, questions: list[str], turns: list[str]) -> list[list[Any]]:
    def run(name: str, texts: list[str], call: Any) -> list[Any]:
        busy, n = process.child_busy_s, process.requests
        walls = []
        for t in texts:
            start = time.perf_counter()
            call(t)
            walls.append(time.perf_counter() - start)
        per = (process.child_busy_s - busy) / max(process.requests - n, 1)
        return [name, len(texts), f"{per * 1e3:.2f}", f"{pct(walls, 50) * 1e3:.2f}", f"{pct(walls, 95) * 1e3:.2f}"]

    def counts(t: str) -> list[int]:
        return [len(tok.encode(t).ids)]

    for t in questions[:5]:  # warm both precisions
        process.embed_queries([t])
        process.embed_queries([t], "fp32")
    return [
        run("plain search: int8 query", questions, lambda t: process.embed_queries([t])),
        run("fp32 query, no tokens", questions, lambda t: process.embed_queries([t], "fp32")),
        run("late search: fp32 query + tokens", questions, lambda t: process.embed_with_tokens("query", [t], counts(t))),
        run("one-text add, no tokens (before)", turns, lambda t: process.embed_documents([t])),
        run("one-text add + tokens (now)", turns, lambda t: process.embed_with_tokens("document", [t], counts(t))),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=200)
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--query-precision", default="int8", choices=["int8", "fp32"], help="the plain searches' (serve's)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from fastapi.testclient import TestClient

    from memos_integrations.mos import MOS
    from memos_integrations.server import KeyStore, Limits, create_app
    from memos_integrations.server.service import serving_embedder

    conv = locomo()[0]
    questions = [str(q["question"]) for q in conv["qa"] if q.get("category") in (1, 2, 3, 4)][: args.questions]
    home = Path(tempfile.mkdtemp()) / "home"
    emb = serving_embedder(home, args.query_precision, embed_process=True)
    process = emb.process
    msgs = [(key, m) for key, _, turns in sessions(conv) for m in turn_messages(turns)][: args.turns]
    print(f"queries: {args.query_precision}; load before: {open('/proc/loadavg').read().strip()}")
    print("A. the child, per request (ms; child: its own seconds computing; round trip: the parent's wall)")
    rows = _child(process, emb.late_tokenizer, questions, [m["content"] for _, m in msgs])
    print(table(["pass", "n", "child ms", "round trip p50", "p95"], rows))

    mos = MOS(home, embedder=emb)
    keys = KeyStore.open(mos.home / "mos.db")
    mos.create_user("alice")
    mos.create_cube_for_user("c", owner_id="alice")
    auth = {"Authorization": f"Bearer {keys.create('alice')[0]}"}
    with TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False)) as client:
        start = time.perf_counter()
        for key, m in msgs:
            m = {k: v for k, v in m.items() if k in ("role", "name", "content")}
            r = client.post("/v1/memories", json={"messages": [m], "session_id": key, "cube_id": "c"}, headers=auth)
            assert r.status_code in (200, 201), r.text
        added = time.perf_counter() - start
        store = mos._cube("c").text_mem.store
        with_rows = store.db.read("SELECT count(*) FROM late_tokens")[0][0]
        print(f"\nB. {len(msgs)} turns added over REST in {added:.1f} s; late_tokens rows: {with_rows}")
        out = []
        for plan in ("learned", "late", "learned", "late"):  # twice, interleaved: the second pair is reported
            emb.clear_query_cache()
            walls, cpu0, n0 = [], process.cpu_seconds(), process.requests
            for q in questions:
                t0 = time.perf_counter()
                r = client.post("/v1/memories/search", json={"query": q, "k": 10, "plan": plan, "cube_id": "c"},
                                headers=auth)
                walls.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
            out.append([plan, len(questions), f"{pct(walls, 50) * 1e3:.1f}", f"{pct(walls, 95) * 1e3:.1f}",
                        f"{(process.cpu_seconds() - cpu0) / len(questions) * 1e3:.2f}",
                        f"{(process.requests - n0) / len(questions):.2f}"])
        print(table(["plan", "searches", "wall p50 ms", "p95 ms", "child CPU ms/search", "child requests/search"],
                    out[2:]))
    print(f"load after: {open('/proc/loadavg').read().strip()}")
    keys.close()
    mos.close()
    emb.close()


if __name__ == "__main__":
    main()
