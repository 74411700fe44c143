"""Retrieval quality on LoCoMo dev: turn-level evidence recall, per QA category, with a word budget.

Each conversation becomes its own cube; every dialogue turn is one message whose id is its
``dia_id`` and whose timestamp is its session's date. For each question of categories 1-4 we search
the cube and measure how many of the question's evidence turns are among the sources of the top k
hits (recall@5/10/20), and within a 400-word context budget: hits are taken best first while the
formatted memories (date, speaker, text: what a model would read) fit in 400 words.

Counting rule (issue 14): a hit counts for the turns it was read from (its ``sources``); a hit with
more than 3 source turns (a summary, an episode) counts for none of them. Summaries lead retrieval to
the turns; they do not stand in for them. What a summary-only context would hold (the turns its
summaries were made from) is reported separately ("summary-only" column: recall of the turns under
the summaries among the top 10 with plan ``summary_hits="keep"``).

When ``memos_integrations.organize`` is importable, every conversation is also organised (the
extractive organiser, no LLM) and the plans run on both cubes: rows marked "+ organised".

    nice python -m benchmarks.bench_retrieval            # the plans side by side, flat and organised
    nice python -m benchmarks.bench_retrieval --plans balanced,deep --cubes organised --limit 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from memos_integrations import MemCube
from memos_integrations.items import Kind
from memos_integrations.prompting import format_memory
from memos_integrations.textual.embed import MiniLMEmbedder
from memos_integrations.textual.read import FastReader
from memos_integrations.textual.retrieve import BALANCED, DEEP, FAST, LATE, LEARNED, MULTIHOP, SearchPlan

from .common import locomo, pct, sessions, table, turn_messages

BUDGET_WORDS = 400
MAX_SOURCES = 3  # a hit read from more turns than this (a summary) counts for none of them
# The first three rows isolate the legs on the same cubes (so they include our indexing: speaker
# and previous turn in the keyword text, speaker in the embedded text); the design page's references
# (plain BM25 0.556, dense MiniLM 0.535, their RRF 0.604) index the bare turn text.
PLANS: dict[str, SearchPlan] = {
    "keyword leg only": SearchPlan(name="bm25", dense=False, time_aware=False),
    "dense leg only": SearchPlan(name="dense", keyword=False, time_aware=False),
    "equal-weight RRF, no time/graph": SearchPlan(name="rrf", time_aware=False),
    "fast": FAST,
    "balanced": BALANCED,
    "deep": DEEP,
    "multihop": MULTIHOP,
    # deep / multihop as they ranked before the sixth session (rrf, no learned re-scoring: docs/organize.md)
    "deep with rrf (before)": DEEP.model_copy(update={"name": "deep-rrf", "fusion": "rrf", "candidates": 60}),
    "multihop with rrf (before)": MULTIHOP.model_copy(update={"name": "multihop-rrf", "fusion": "rrf"}),
    # the plan options added for multi-hop and open-domain questions, one at a time on balanced
    "balanced without speaker_boost (before)": BALANCED.model_copy(update={"name": "balanced-before", "speaker_boost": 0.0}),
    "deep without speaker_boost (before)": DEEP.model_copy(update={"name": "deep-before", "speaker_boost": 0.0}),
    # the structure side of issue 14 (measured, none on in a preset: see docs/organize.md); person topics
    # need the organiser's person_topics option, which the run turns on when a chosen plan reads them
    "deep + person topics": DEEP.model_copy(update={"name": "deep-persons", "person_topics": True}),
    "deep + summary_members 3": DEEP.model_copy(update={"name": "deep-members3", "summary_members": 3}),
    "deep + coarse_weight 0.25 + summary_members 3": DEEP.model_copy(
        update={"name": "deep-light-c2f", "coarse_weight": 0.25, "summary_members": 3}),
    "deep + coarse_on_time off": DEEP.model_copy(update={"name": "deep-c2f-not-when", "coarse_on_time": False}),
    "multihop + coarse_on_time off": MULTIHOP.model_copy(update={"name": "multihop-c2f-not-when", "coarse_on_time": False}),
    "deep + coarse_weight 0.25 + summary_members 3 + coarse_on_time off": DEEP.model_copy(update={
        "name": "deep-light-c2f-not-when", "coarse_weight": 0.25, "summary_members": 3, "coarse_on_time": False}),
    # query expansion (textual/expand.py): the unnamed leg is part of balanced; the feedback legs are options
    "balanced without unnamed leg (before)": BALANCED.model_copy(update={"name": "balanced-named", "unnamed_weight": 0.0}),
    "balanced + Rocchio feedback": BALANCED.model_copy(update={
        "name": "rocchio", "feedback_docs": 5, "feedback_dense_weight": 0.5}),
    "balanced + Rocchio feedback (each hit)": BALANCED.model_copy(update={
        "name": "rocchio-each", "feedback_docs": 5, "feedback_dense_weight": 0.5, "feedback_each": True}),
    "balanced + term feedback": BALANCED.model_copy(update={
        "name": "rm3", "feedback_docs": 5, "feedback_terms": 10, "feedback_terms_weight": 0.5}),
    # one person's life over many sessions (textual/speaker_legs.py): balanced has the keyword leg without
    # names and the content prior since; the rows without them, and the options measured and left off
    "balanced without keyword_unnamed and content_prior (before)": BALANCED.model_copy(update={
        "name": "balanced-before-speaker-legs", "keyword_unnamed": False, "content_prior": None}),
    "balanced without content_prior": BALANCED.model_copy(update={"name": "no-prior", "content_prior": None}),
    "balanced without keyword_unnamed": BALANCED.model_copy(update={"name": "kw-named", "keyword_unnamed": False}),
    "balanced + content prior 8": BALANCED.model_copy(update={"name": "prior8", "content_prior": 8}),
    "balanced + content prior 12": BALANCED.model_copy(update={"name": "prior12", "content_prior": 12}),
    "balanced + speaker dense leg": BALANCED.model_copy(update={"name": "speaker-dense", "speaker_dense_weight": 0.5}),
    "balanced + speaker keyword leg": BALANCED.model_copy(update={"name": "speaker-kw", "speaker_keyword_weight": 0.5}),
    "balanced + list spread 2": BALANCED.model_copy(update={"name": "spread2", "list_spread": 2}),
    # balanced's candidates re-scored by fitted weights (textual/fusion_learned.py; benchmarks/fit_fusion.py)
    "learned": LEARNED,
    # learned + late interaction over the token vectors stored at ingest (textual/late.py; cubes are built per run)
    "late": LATE,
}


def build(conv: dict[str, Any], root: Path, embedder: Any, context_turns: int) -> tuple[MemCube, int, float]:
    """A cube holding ``conv``, one ``add`` per session; returns it, its turns and the wall seconds the adds took."""
    cube, n, wall, _ = build_timed(conv, root, embedder, context_turns)
    return cube, n, wall


def build_timed(conv: dict[str, Any], root: Path, embedder: Any, context_turns: int) -> tuple[MemCube, int, float, float]:
    """:func:`build`, also returning the process CPU seconds the adds took (the machine is shared:
    wall time is not what ingest costs)."""
    cube = MemCube.create(root / conv["sample_id"], embedder=embedder)
    cube.text_mem.reader = FastReader(context_turns=context_turns)
    n = 0
    start, cpu = time.perf_counter(), time.process_time()
    for key, when, turns in sessions(conv):
        msgs = turn_messages(turns)
        cube.add(messages=msgs, user_id=conv["sample_id"], session_id=key, timestamp=when)
        n += len(msgs)
    return cube, n, time.perf_counter() - start, time.process_time() - cpu


def recall(selected: list[Any], evidence: set[str]) -> float:
    """Share of ``evidence`` turns among the sources of ``selected`` (a hit of > MAX_SOURCES turns counts for none)."""
    found = {s for h in selected if len(h.item.sources) <= MAX_SOURCES for s in h.item.sources}
    return len(evidence & found) / len(evidence)


def in_budget(hits: list[Any]) -> list[Any]:
    """The leading hits of the top 10 whose formatted memories fit BUDGET_WORDS words."""
    budget: list[Any] = []
    words = 0
    for h in hits[:10]:
        w = len(format_memory(h.item).split())
        if words + w > BUDGET_WORDS:
            break
        budget.append(h)
        words += w
    return budget


def evaluate(
    cube: MemCube, qa: list[dict[str, Any]], plan: SearchPlan, seen: dict[str, Any] | None = None,
) -> tuple[dict[str, list[float]], list[float]]:
    """Recall and latency of ``plan`` over ``qa``; with ``seen``, each question's hits (id, score repr)
    are recorded there, by question number and text (``--save`` / ``--compare``: same hits before and after;
    a hit is named by its sources and text, as ids differ from one build to the next)."""
    scores: dict[str, list[float]] = defaultdict(list)
    latencies: list[float] = []
    for n, q in enumerate(qa):
        if q["category"] == 5 or not q.get("evidence"):
            continue
        evidence = {e.strip() for e in q["evidence"]}
        start, cpu = time.perf_counter(), time.thread_time()
        hits = cube.search(q["question"], top_k=20, plan=plan)
        latencies.append(time.perf_counter() - start)
        if seen is not None:
            # ids are new in every build: a hit is named by its sources (a turn's dia_id; a summary's are
            # memory ids, so their number) and text
            seen[f"{n}:{q['question']}"] = [[h.item.sources if h.item.kind != Kind.SUMMARY else len(h.item.sources),
                                             h.item.text, repr(h.score)] for h in hits]
        scores["all:cpu"].append(time.thread_time() - cpu)  # this thread's CPU: what the load does not inflate
        cat = str(q["category"])

        for name, value in (("r@5", recall(hits[:5], evidence)), ("r@10", recall(hits[:10], evidence)),
                            ("r@20", recall(hits[:20], evidence)), ("r@10/400w", recall(in_budget(hits), evidence))):
            scores[f"{cat}:{name}"].append(value)
            scores[f"all:{name}"].append(value)
        scores["all:words@10"].append(float(sum(len(format_memory(h.item).split()) for h in hits[:10])))
        summaries = [h.item for h in hits[:10] if h.item.kind == Kind.SUMMARY]
        if summaries:  # what a summary-only context would hold: the turns under the summaries found
            under = {s for m in cube.text_mem.get_many([i for it in summaries for i in it.sources]) for s in m.sources}
            scores["all:summary-only"].append(len(evidence & under) / len(evidence))
        else:
            scores["all:summary-only"].append(0.0)
    return scores, latencies


def organiser() -> Any:
    """``memos_integrations.organize.organize`` when it is installed (issue 14), else None."""
    try:
        from memos_integrations.organize import organize
    except ImportError:
        return None
    return organize


def run(context_turns: int = 1, plans: dict[str, SearchPlan] | None = None, limit: int | None = None,
        organised: bool = True, flat: bool = True, query_precision: str | None = None) -> dict[str, Any]:
    """Every plan on flat cubes (``flat``) and, with the organiser, on organised ones (``organised``).
    The result's ``hits`` are every question's hits, by plan row and conversation (``--save``)."""
    plans = dict(plans or PLANS)
    organize = organiser() if organised else None
    if organize is not None:
        plans.update({f"{name} + organised": plan for name, plan in plans.items()})
        plans["summaries kept + organised"] = DEEP.model_copy(update={"name": "keep", "summary_hits": "keep"})
    if not flat:
        plans = {name: plan for name, plan in plans.items() if name.endswith("+ organised")}
    policy = None
    if organize is not None:
        from memos_integrations.organize import OrganizePolicy

        policy = OrganizePolicy(person_topics=any(p.person_topics for p in plans.values()))
    data = locomo()[:limit]
    embedder = MiniLMEmbedder() if query_precision is None else MiniLMEmbedder(query_precision=query_precision)
    _ = embedder.fingerprint, embedder.query_precision_in_use  # load the model (and its int8 layers) before timing
    results: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in plans}
    latency: dict[str, list[float]] = {name: [] for name in plans}
    seen: dict[str, dict[str, Any]] = {name: {} for name in plans}
    turns_total, ingest_s, ingest_cpu, items = 0, 0.0, 0.0, []
    # the embedder alone on the same texts, batched per session as ingest does: the ceiling for ingest
    texts = [[m["content"] for m in turn_messages(t)] for conv in data for _, _, t in sessions(conv)]
    organise_s = 0.0
    start, cpu = time.perf_counter(), time.process_time()
    for batch in texts:
        embedder.embed_documents(batch)
    embed_rate = sum(map(len, texts)) / (time.perf_counter() - start)
    embed_cpu = time.process_time() - cpu
    with tempfile.TemporaryDirectory() as tmp:
        for conv in data:
            cube, n, secs, cpu_s = build_timed(conv, Path(tmp), embedder, context_turns)
            turns_total += n
            ingest_s += secs
            ingest_cpu += cpu_s
            items.append(n)
            for organised in (False, True) if organize is not None else (False,):
                if organised and organize is not None:
                    start = time.perf_counter()
                    organize(cube, user_id=conv["sample_id"], policy=policy)
                    organise_s += time.perf_counter() - start
                for name, plan in plans.items():
                    if name.endswith("+ organised") != organised:
                        continue
                    embedder.clear_query_cache()  # every plan's latency includes embedding its queries
                    s, lat = evaluate(cube, conv["qa"], plan, seen[name].setdefault(conv["sample_id"], {}))
                    for k, v in s.items():
                        results[name][k].extend(v)
                    latency[name].extend(lat)
            cube.close()
    return {"results": results, "latency": latency, "hits": seen, "turns": turns_total, "ingest_s": ingest_s, "items": items,
            "embed_rate": embed_rate, "ingest_cpu": ingest_cpu, "embed_cpu": embed_cpu,
            "backend": f"{embedder._model.backend}, queries in {embedder.query_precision_in_use}",
            "organise_s": organise_s, "person_topics": policy is not None and policy.person_topics}


def report(out: dict[str, Any]) -> str:
    rows = []
    for name, s in out["results"].items():
        mean = {k: sum(v) / len(v) for k, v in s.items()}
        lat = out["latency"][name]
        rows.append([
            name, mean["all:r@5"], mean["all:r@10"], mean["all:r@20"], mean["all:r@10/400w"],
            mean["all:words@10"], *(mean[f"{c}:r@10/400w"] for c in "1234"), mean["all:summary-only"],
            pct(lat, 50) * 1000, pct(lat, 95) * 1000, pct(s["all:cpu"], 50) * 1000, pct(s["all:cpu"], 95) * 1000,
        ])
    quality = table(
        ["plan", "R@5", "R@10", "R@20", "R@10 in 400 words", "words in top 10", "cat1", "cat2",
         "cat3", "cat4", "summary-only", "search p50 ms", "search p95 ms", "thread CPU p50 ms", "thread CPU p95 ms"],
        rows,
    )
    rate = out["turns"] / out["ingest_s"]
    ingest = (f"ingest: {out['turns']} turns in {out['ingest_s']:.1f} s = {rate:.0f} turns/s, against {out['embed_rate']:.0f} "
              f"texts/s for the embedder alone on the same per-session batches ({rate / out['embed_rate']:.0%}; "
              f"MiniLM on {out['backend']}); conversations of {min(out['items'])}-{max(out['items'])} items"
              f"\ningest CPU: {out['ingest_cpu']:.1f} s process time = {out['turns'] / max(out['ingest_cpu'], 1e-9):.0f} "
              f"turns per CPU second, against {out['turns'] / max(out['embed_cpu'], 1e-9):.0f} for the embedder alone "
              f"({out['embed_cpu']:.1f} s)")
    if out.get("organise_s"):
        ingest += f"\norganising (extractive{', person topics on' if out.get('person_topics') else ''}): " \
                  f"{out['organise_s']:.1f} s for {out['turns']} turns = " \
                  f"{out['organise_s'] / out['turns'] * 1000:.2f} s per 1,000 memories"
    return quality + "\n\ncategory columns: R@10 in 400 words\n" + ingest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("context_turns", nargs="?", type=int, default=1, help="turns of context the reader keeps")
    ap.add_argument("--plans", default="", help="comma-separated row names of PLANS (default: all)")
    ap.add_argument("--limit", type=int, default=None, help="first N conversations only")
    ap.add_argument("--cubes", choices=["both", "flat", "organised"], default="both",
                    help="flat cubes, organised ones (extractive organiser), or both side by side")
    ap.add_argument("--query-precision", choices=["fp32", "int8"], default=None,
                    help="what MiniLM embeds queries in (default: the embedder's default); documents are fp32")
    ap.add_argument("--save", type=Path, default=None, help="write every question's hits (id, score) per plan to this JSON file")
    ap.add_argument("--compare", type=Path, default=None,
                    help="check every question's hits against a --save file (same plans and cubes): exit 1 when any differ")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.plans.split(",") if n.strip()]
    unknown = set(names) - set(PLANS)
    if unknown:
        raise SystemExit(f"unknown plans {sorted(unknown)}; rows: {sorted(PLANS)}")
    plans = {n: PLANS[n] for n in names} or None
    out = run(context_turns=args.context_turns, plans=plans, limit=args.limit, organised=args.cubes != "flat",
              flat=args.cubes != "organised", query_precision=args.query_precision)
    print(report(out) + f"\nload average (1, 5, 15 min) at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.save:
        args.save.write_text(json.dumps(out["hits"], sort_keys=True))
    if args.compare:
        different = compare(json.loads(args.compare.read_text()), out["hits"])
        print(f"hits vs {args.compare}: " + ("identical for every question" if not different else
              f"{len(different)} questions differ, first: {different[:5]}"))
        if different:
            raise SystemExit(1)


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The (plan, conversation, question) keys whose hits differ between two ``--save`` files
    (the plans of ``after`` only; a plan ``before`` did not run is a difference)."""
    return [f"{plan} / {conv} / {q}" for plan in sorted(after) for conv in sorted(after[plan])
            for q in sorted(after[plan][conv]) if before.get(plan, {}).get(conv, {}).get(q) != after[plan][conv][q]]


if __name__ == "__main__":
    main()
