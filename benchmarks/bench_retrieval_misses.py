"""Where the evidence of multi-hop (category 1) and open-domain (category 3) questions goes missing.

For every evidence turn of a LoCoMo dev question of those categories: is it among the plan's top 10
(counting rule of issue 14), at fused rank 11-20, 21-50 or beyond; is it in the dense or the keyword
leg's first 60 (the plans' pool) at all; was the top 10 crowded by another session (4+ hits from one
session that is not the turn's). Also how much evidence the one speaker a question names said, and
what holds the top 10's slots that are not evidence: small talk (fewer than 8 content words, the
speakers' names not counted: :func:`memos_integrations.textual.speaker_legs.content_words`), a turn
of someone the question does not name, a second hit of a session already listed.

    nice python -m benchmarks.bench_retrieval_misses [--plan balanced] [--organised] [--limit N]
    nice python -m benchmarks.bench_retrieval_misses --plan "balanced + keyword leg without names"  # a PLANS row
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from memos_integrations.textual import retrieve as R
from memos_integrations.textual.embed import MiniLMEmbedder
from memos_integrations.textual.filters import MemoryFilter
from memos_integrations.textual.speaker_legs import content_words

from .bench_retrieval import MAX_SOURCES, PLANS, build
from .common import locomo, sessions, table

POOL = 60  # what each leg of the presets contributes (SearchPlan.candidates)


def _ranks(mem: Any, ranked: list[tuple[int, float]]) -> dict[str, int]:
    """Evidence turn -> its first rank in a leg's list (hits of more than MAX_SOURCES turns count for none)."""
    items = mem.store.get_by_rid([r for r, _ in ranked])
    out: dict[str, int] = {}
    for n, (rid, _) in enumerate(ranked, 1):
        item = items.get(rid)
        if item is not None and len(item.sources) <= MAX_SOURCES:
            for s in item.sources:
                out.setdefault(s, n)
    return out


def misses(cube: Any, conv: dict[str, Any], plan: R.SearchPlan, counts: Counter[str]) -> None:
    mem = cube.text_mem
    speaker = {t["dia_id"]: t["speaker"] for _, _, turns in sessions(conv) for t in turns}
    session_of = {t["dia_id"]: key for key, _, turns in sessions(conv) for t in turns}
    for q in conv["qa"]:
        cat = q["category"]
        if cat not in (1, 3) or not q.get("evidence"):
            continue
        evidence = {e.strip() for e in q["evidence"]}
        hits = cube.search(q["question"], top_k=50, plan=plan)
        fused: dict[str, int] = {}
        for n, h in enumerate(hits, 1):
            if len(h.item.sources) <= MAX_SOURCES:
                for s in h.item.sources:
                    fused.setdefault(s, n)
        qvec = mem.embedder.embed_query(q["question"])
        dense = _ranks(mem, mem._dense(qvec, MemoryFilter(), POOL))
        terms = R.keyword_terms(q["question"])
        keyword = _ranks(mem, mem.store.keyword_search(terms, MemoryFilter(), POOL)) if terms else {}
        top = Counter(h.item.session_id for h in hits[:10])
        crowd, crowd_n = top.most_common(1)[0] if top else (None, 0)
        named = {s for s in set(speaker.values()) if s.lower() in q["question"].lower()}
        counts[f"{cat}:questions"] += 1
        names = {w for s in set(speaker.values()) for w in R.keyword_terms(s, None)}
        listed: set[str | None] = set()
        for h in hits[:10]:
            sources = set(h.item.sources) if len(h.item.sources) <= MAX_SOURCES else set()
            if not sources & evidence:
                counts[f"{cat}:top-10 slots not evidence"] += 1
                counts[f"{cat}:  of them small talk (< 8 content words)"] += content_words(h.item.text, names) < 8
                counts[f"{cat}:  of them said by someone the question does not name"] += (
                    len(named) == 1 and h.item.metadata.get("speaker") not in named)
                counts[f"{cat}:  of them a second hit of a session listed"] += h.item.session_id in listed
            listed.add(h.item.session_id)
        for e in evidence:
            counts[f"{cat}:evidence turns"] += 1
            if len(named) == 1 and e in speaker:
                counts[f"{cat}:said by the one named speaker"] += speaker[e] in named
                counts[f"{cat}:questions naming one speaker (their evidence)"] += 1
            rank = fused.get(e)
            if rank is not None and rank <= 10:
                counts[f"{cat}:found in the top 10"] += 1
                continue
            where = "11-20" if rank and rank <= 20 else "21-50" if rank else "beyond 50"
            counts[f"{cat}:missed, fused rank {where}"] += 1
            counts[f"{cat}:missed, in neither leg's first {POOL}"] += e not in dense and e not in keyword
            counts[f"{cat}:missed, 4+ of the top 10 from another session"] += crowd_n >= 4 and crowd != session_of.get(e)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", default="balanced", help=f"a preset {sorted(R.PRESETS)} or a row of bench_retrieval's PLANS")
    ap.add_argument("--organised", action="store_true", help="organise each cube first (extractive)")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    if args.plan not in R.PRESETS and args.plan not in PLANS:
        raise SystemExit(f"unknown plan {args.plan!r}; presets: {sorted(R.PRESETS)}, rows: {sorted(PLANS)}")
    plan = R.PRESETS.get(args.plan) or PLANS[args.plan]
    embedder = MiniLMEmbedder()
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for conv in locomo()[: args.limit]:
            cube, _, _ = build(conv, Path(tmp), embedder, 1)
            if args.organised:
                from memos_integrations.organize import organize

                organize(cube, user_id=conv["sample_id"])
            misses(cube, conv, plan, counts)
            cube.close()
    names = sorted({k.split(":", 1)[1] for k in counts})
    print(table(["evidence turns", "category 1", "category 3"], [[n, counts[f"1:{n}"], counts[f"3:{n}"]] for n in names]))


if __name__ == "__main__":
    main()
