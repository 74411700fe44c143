"""The LLM reader's costs and guarantees, against the OpenAI-protocol stand-in (tests/openai_standin.py)
with a fixed latency per call (200 ms by default), so the numbers are the cube's side, not a model's.

Measured: cube-side overhead of a fine-mode window of 10 LoCoMo turns (wall time minus the LLM calls'
time), async add vs fast add, LLM calls per window, prompt tokens per window of 10 LoCoMo turns (the
stand-in counts four characters a token, JSON schema included), the contradiction suite, and kill -9
during async extraction.

    python -m benchmarks.bench_reader [--sessions 2] [--latency 0.2] [--crashes 20]

The stand-in's replies are rules, not a model: no accuracy is measured here (benchmarks/locomo_qa.py is
the accuracy run for a real endpoint).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import locomo, median, pct, sessions, table, turn_messages  # noqa: E402
from tests.openai_standin import StandinServer, check_history, contradiction_suite, rule_responder  # noqa: E402


def locomo_responder(request: dict[str, Any]) -> str:
    """Rules standing in for a model on LoCoMo turns: up to three facts a window (the longest turns), and
    ADD for each (NOOP for a text already known)."""
    system = request["messages"][0]["content"]
    user = request["messages"][-1]["content"]
    if system.startswith("You extract"):
        lines = [m.groups() for m in (re.match(r"(m\d+) (?:\[[^\]]*\] )?([^:]+): (.*)", ln) for ln in user.splitlines()) if m]
        longest = sorted(lines, key=lambda g: -len(g[2]))[:3]
        memories = [{"type": "fact", "text": f"{speaker} said: {text[:120]}", "sources": [label], "confidence": 0.7,
                     "entities": [speaker]} for label, speaker, text in longest if len(text) > 40]
        return json.dumps({"memories": memories})
    new = re.findall(r"^(c\d+): \[\w+\] (.+?)(?: \(from [\d-]+\))?(?: <- \".*\")?$", user, re.M)
    old = {t: label for label, t in re.findall(r"^(e\d+): \[\w+\] (.+?)(?: \(since [\d-]+\))?$", user, re.M)}
    return json.dumps({"decisions": [{"id": label, "op": "NOOP" if text in old else "ADD", "target": old.get(text)}
                                     for label, text in new]})


def windows(n_sessions: int) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    conv = locomo()[0]
    for _key, when, turns in list(sessions(conv))[:n_sessions]:
        msgs = turn_messages(turns)
        out += [(when, msgs[i:i + 10]) for i in range(0, len(msgs) - 9, 10)]
    return out


def ingest(embedder: Any, url: str, mode: str, wins: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    from memos_integrations import MemCube
    from memos_integrations.readers import LLMReader

    reader = LLMReader.from_openai(model="standin", base_url=url, api_key="x", backoff_s=0.01)
    walls, llm, calls, prompts, embeds = [], [], [], [], []
    with MemCube.init_from_dir(Path(tempfile.mkdtemp()) / "c", embedder=embedder, reader=reader) as cube:
        for n, (when, msgs) in enumerate(wins):
            before = EMBED_SECONDS[0]
            start = time.perf_counter()
            out: Any = cube.add(messages=msgs, user_id="conv0", session_id=f"s{n}", timestamp=when, mode=mode)
            walls.append(time.perf_counter() - start)
            embeds.append(EMBED_SECONDS[0] - before)
            llm.append(out.usage.seconds)
            calls.append(out.usage.calls)
            prompts.append(out.usage.prompt_tokens)
        waited = time.perf_counter()
        cube.wait(600)
        waited = time.perf_counter() - waited
        if mode == "async":
            applied = [r["detail"]["usage"] for r in cube.audit_log(10_000) if r["action"] == "reader_apply"]
            calls = [u["calls"] for u in applied]
            prompts = [u["prompt_tokens"] for u in applied]
    return {"walls": walls, "llm": llm, "calls": calls, "prompts": prompts, "drain": waited, "embeds": embeds}


EMBED_SECONDS = [0.0]


def time_embeddings(embedder: Any) -> None:
    """Count the seconds the embedding model takes (a model's time, like the LLM's)."""
    original = embedder.embed_documents

    def timed(texts: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(texts)
        finally:
            EMBED_SECONDS[0] += time.perf_counter() - start

    embedder.embed_documents = timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=2, help="LoCoMo sessions of conversation 0 to ingest")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds the stand-in takes per call")
    ap.add_argument("--crashes", type=int, default=20, help="kill -9 repeats (0 to skip)")
    ap.add_argument("--histories", type=int, default=50)
    args = ap.parse_args()
    from memos_integrations.textual.embed import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    _ = embedder.fingerprint
    time_embeddings(embedder)
    wins = windows(args.sessions)
    rows: list[list[Any]] = []
    with StandinServer(locomo_responder, latency=args.latency) as srv:
        ingest(embedder, srv.url, "fast", wins[:2])  # warm up (embedder, SQLite, Chroma)
        fast = ingest(embedder, srv.url, "fast", wins)
        fine = ingest(embedder, srv.url, "fine", wins)
        asyn = ingest(embedder, srv.url, "async", wins)
    overhead = [w - s for w, s in zip(fine["walls"], fine["llm"])]
    reader_only = [o - f for o, f in zip(overhead, fast["walls"])]
    no_models = [r - (e - fe) for r, e, fe in zip(reader_only, fine["embeds"], fast["embeds"])]
    rows += [
        ["windows of 10 LoCoMo turns", len(wins), ""],
        ["fast add per window p50 / p95 (ms)", f"{median(fast['walls']) * 1e3:.1f} / {pct(fast['walls'], 95) * 1e3:.1f}", ""],
        ["fine add per window p50 (ms), LLM time excluded", f"{median(overhead) * 1e3:.1f}", "<= 15 ms (target)"],
        ["  of which the reader's own work p50 / p95 (ms)", f"{median(reader_only) * 1e3:.1f} / {pct(reader_only, 95) * 1e3:.1f}", "fine minus fast minus LLM"],
        ["  of which without the embedding model's time p50 / p95 (ms)",
         f"{median(no_models) * 1e3:.1f} / {pct(no_models, 95) * 1e3:.1f}", "SQLite, Chroma, search, parsing"],
        ["async add per window p50 (ms)", f"{median(asyn['walls']) * 1e3:.1f}", f"{median(asyn['walls']) / median(fast['walls']):.2f}x fast (<= 2x)"],
        ["LLM calls per window (fine) avg / max", f"{sum(fine['calls']) / len(wins):.2f} / {max(fine['calls'])}", "<= 2"],
        ["prompt tokens per window avg", f"{sum(fine['prompts']) / len(wins):.0f}", "<= 1,500"],
        ["prompt tokens per window p50 / p95 / max",
         f"{median(fine['prompts']):.0f} / {pct(fine['prompts'], 95):.0f} / {max(fine['prompts'])}", ""],
        ["async: windows read after add returned, drain (s)", f"{asyn['drain']:.1f}", f"{len(asyn['calls'])} windows"],
    ]
    # the contradiction suite
    from memos_integrations import MemCube
    from memos_integrations.readers import LLMReader

    suite = contradiction_suite(args.histories)
    with StandinServer(rule_responder) as srv:
        reader = LLMReader.from_openai(model="standin", base_url=srv.url, api_key="x")
        with MemCube.init_from_dir(Path(tempfile.mkdtemp()) / "c", embedder=embedder, reader=reader) as cube:
            for h in suite:
                for when, text in h.turns:
                    cube.add(messages=[{"role": "user", "name": h.name, "content": text}], user_id=h.user, timestamp=when)
            results = [check_history(cube, h) for h in suite]
    for key, label in (("current", "current truth first (no stale version returned)"),
                       ("as_of", "old version returned by as_of"), ("history", "old version in history"),
                       ("top1", "current truth ranked first among all the user's memories")):
        rows.append([f"contradiction suite: {label}", f"{100 * sum(r[key] for r in results) / len(results):.0f}%",
                     f"{len(results)} histories"])
    if args.crashes:
        from tests.integration.test_reader_crash import crash_once

        rng = random.Random(7)
        lost = twice = mid = 0
        for n in range(args.crashes):
            with StandinServer(rule_responder, latency=0.15) as srv:
                out = crash_once(Path(tempfile.mkdtemp()) / f"crash{n}", srv.url, 8, rng, embedder)
            lost += out["counts"] != {"done": 8} or out["raw"] != 8
            twice += out["applied"] != 8 or out["applied_jobs"] != 8
            mid += 0 < out["done_before_restart"] < 8
        rows.append([f"kill -9 during async extraction x{args.crashes}: windows lost / applied twice",
                     f"{lost} / {twice}", f"{mid} kills landed mid-queue"])
    print(table(["measure", "value", "note"], rows))


if __name__ == "__main__":
    main()
