"""The ``late`` re-scorer fitted on flat and organised cubes together, each conversation held out on both.

Why: issue 14 measures retrieval on cubes the extractive organiser has organised. ``late``'s weights were
fitted on flat cubes; on organised ones the candidates differ (summaries and episodes among them, which
count for no turn, and the learned features' distributions shift), so weights fitted on one layout and
scored on the other is not the held-out figure the issue asks for. Here every conversation is held out in
turn and ranked by weights fitted on the other four conversations, with the L2 strength chosen inside the
fold (nested, as :func:`.fit_fusion.nested`), for three training sets: flat only, organised only, and both
layouts' questions together. Each is scored on the held-out conversation's flat and organised cubes.

    LOCOMO_PATH=... nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.fit_fusion_layouts
    LOCOMO_PATH=... nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.fit_fusion_layouts --write

``--write`` prints the weights fitted on both layouts of all five conversations at the L2 of best joint
held-out recall, as textual/late.py's ``WEIGHTS`` / ``LIST_WEIGHTS``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from memos_integrations.textual import fusion_features as F
from memos_integrations.textual import late as LT

from . import fit_fusion as FF
from .common import table

CATS = ["all", "1", "2", "3", "4"]


def split_list(qs: list[FF.Question]) -> None:
    """A weight per feature for list questions and one for the rest (fit_fusion's ``--split-list``)."""
    for q in qs:
        is_list = q.X[:, [F.NAMES.index("list")]]
        q.X = np.hstack([q.X * (1 - is_list), q.X * is_list])


def shipped(q: FF.Question) -> np.ndarray:
    """late.py's rounded constants on ``q`` (split columns folded back)."""
    half = q.X.shape[1] // 2
    X = q.X[:, :half] + q.X[:, half:]
    is_list = len(q.cands) > 0 and bool(X[0, F.NAMES.index("list")] > 0)
    return X @ LT.weight_vector(LT.LIST_WEIGHTS if is_list else LT.WEIGHTS)  # type: ignore[no-any-return]


def held_by(train: list[FF.Question], score: list[FF.Question], grid: list[float]) -> tuple[dict[str, float], list[float]]:
    """``score``'s recall by weights fitted on ``train`` without the held-out conversation (L2 chosen there)."""
    return FF.cross_probe(score, train, "pointwise", grid)  # type: ignore[arg-type]


def without_late(qs: list[FF.Question]) -> list[FF.Question]:
    """Copies of ``qs`` whose late columns are 0 (both halves of a split matrix): fitted, ``learned``'s model."""
    out = []
    for q in qs:
        X = q.X.copy()
        half = X.shape[1] // 2
        for start in (len(F.NAMES), half + len(F.NAMES)):
            X[:, start:start + len(LT.NAMES)] = 0.0
        out.append(dataclasses.replace(q, X=X))
    return out


def intervals(flat: list[FF.Question], org: list[FF.Question], grid: list[float], n: int) -> list[list[object]]:
    """Rows: the 95% bootstrap interval (``n`` resamples of each category's questions, seed 0) of late's
    held-out recall (fitted on flat) and of its gain over learned's (the same fit without the late columns),
    question by question on the same candidates."""
    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    for name, qs in (("flat", flat), ("organised", org)):
        late, _ = FF.cross_logits(qs, flat, "pointwise", grid)  # type: ignore[arg-type]
        base, _ = FF.cross_logits(without_late(qs), without_late(flat), "pointwise", grid)  # type: ignore[arg-type]
        r_late = np.array([FF.recall(q, lg) for q, lg in zip(qs, late)])
        r_base = np.array([FF.recall(q, lg) for q, lg in zip(qs, base)])
        cats = np.array([str(q.category) for q in qs])
        for label, values in (("late, held out", r_late), ("late - learned, held out", r_late - r_base)):
            cells = []
            for c in CATS:
                v = values if c == "all" else values[cats == c]
                means = v[rng.integers(0, len(v), size=(n, len(v)))].mean(axis=1)
                lo, hi = np.percentile(means, [2.5, 97.5])
                cells.append(f"{v.mean():.3f} [{lo:.3f}, {hi:.3f}]")
            rows.append([name, f"{label}: mean [95% interval, {n} resamples]", *cells])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cubes", type=Path, default=Path("/tmp/fit_fusion_cubes-late"), help="cubes built once (token vectors)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--l2", default="0.01,0.001,0.0001")
    ap.add_argument("--no-late", action="store_true", help="the learned features only (no late columns)")
    ap.add_argument("--write", action="store_true", help="print WEIGHTS / LIST_WEIGHTS fitted on both layouts")
    ap.add_argument("--ci", type=int, default=0, help="bootstrap resamples of the questions for 95%% intervals "
                    "of late (fitted on flat, held out) and of its gain over learned, per layout and category")
    args = ap.parse_args(argv)
    FF.EXTRA = [] if args.no_late else list(LT.NAMES)
    grid = [float(x) for x in args.l2.split(",")]
    probe = FF.PROBE.model_copy(update={"candidates": max(FF.PROBE.candidates, F.LIST_WINDOW)})  # as fit_fusion's
    flat = FF.collect(args.cubes, False, args.limit, probe)
    org = FF.collect(args.cubes, True, args.limit, probe)
    split_list(flat)
    split_list(org)
    both = flat + org
    rows = []
    for name, qs in (("flat", flat), ("organised", org)):
        base = FF.scores_of(qs, [None] * len(qs))
        rows.append([name, "balanced's order (before re-scoring)", *(base[c] for c in CATS)])
        if not args.no_late:
            mine = FF.scores_of(qs, [shipped(q) for q in qs])
            rows.append([name, "late.py's WEIGHTS (fitted on flat, all five: in-sample)", *(mine[c] for c in CATS)])
        for label, train in (("flat", flat), ("organised", org), ("both layouts", both)):
            held, chosen = held_by(train, qs, grid)
            rows.append([name, f"fitted on {label}, held out (L2 per fold {chosen})", *(held[c] for c in CATS)])
    if args.ci and not args.no_late:
        rows.extend(intervals(flat, org, grid, args.ci))
    print(f"{len(flat)} questions per layout")
    print(table(["cubes", "weights", "R@10 in 400 words", "cat1", "cat2", "cat3", "cat4"], rows))
    if args.write:
        best = max(grid, key=lambda l2: FF.evaluate_loco(both, "pointwise", l2))
        w = FF.fit(both, "pointwise", best)
        print(f"# pointwise, L2 {best}, fitted on both layouts of all {len({q.conv for q in both})} conversations")
        FF.print_weights(w)


if __name__ == "__main__":
    main()
