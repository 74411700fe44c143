"""Leader clustering sorts only the leaders over the threshold (organize/tree.py ``leader_clusters``).

It used to sort every leader's similarity for every memory (``O(clusters log clusters)`` each): with
10,000 random 384-d memories that never cluster, 6.6-7.1 s of CPU against 1.9-2.0 s now (one thread,
two runs each, interleaved). The clusters must be exactly those of the full sort, ties (equal similarities, broken by
leader order), full clusters (``max_size``) and near-duplicates joining a full cluster included."""

from __future__ import annotations

import numpy as np

from memos_integrations.organize.tree import Cluster, leader_clusters, near_duplicate, word_set


def full_sort(ids: list[str], vectors: np.ndarray, threshold: float, max_size: int,
              texts: list[str]) -> list[Cluster]:
    """The definition: every leader by similarity (stable), the first over the threshold with room
    (or whose leader's text it nearly repeats)."""
    words = [word_set(t) for t in texts]
    clusters: list[Cluster] = []
    heads: list[int] = []
    for n, item_id in enumerate(ids):
        chosen = -1
        if clusters:
            sims = np.array([float(vectors[heads[c]] @ vectors[n]) for c in range(len(clusters))], dtype=np.float32)
            for c in np.argsort(-sims, kind="stable"):
                if sims[c] < threshold:
                    break
                if len(clusters[c].members) < max_size or near_duplicate(words[n], words[heads[c]]):
                    chosen = int(c)
                    break
        if chosen < 0:
            clusters.append(Cluster(item_id, [item_id]))
            heads.append(n)
        else:
            clusters[chosen].members.append(item_id)
    return clusters


def test_the_clusters_are_those_of_sorting_every_leader() -> None:
    rng = np.random.default_rng(9)
    topics = rng.standard_normal((6, 16)).astype(np.float32)
    rows, texts = [], []
    for n in range(400):
        kind = n % 4
        if kind == 0:  # a repeat of an earlier row: equal similarities, ties broken by leader order
            rows.append(rows[int(rng.integers(0, len(rows)))] if rows else topics[0])
        elif kind == 1:  # noise: a leader of its own
            rows.append(rng.standard_normal(16).astype(np.float32))
        else:  # near a topic: clusters fill up to max_size
            rows.append(topics[int(rng.integers(0, 6))] + 0.3 * rng.standard_normal(16).astype(np.float32))
        texts.append(f"my bank is Nordea and my account ends in {n}" if n % 7 == 0 else f"memory number {n} about x{n % 5}")
    vectors = np.stack(rows).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"m{n:03d}" for n in range(len(rows))]
    for threshold, max_size in ((0.5, 40), (0.8, 3), (0.2, 5), (1.01, 10)):
        got = [(c.leader, c.members) for c in leader_clusters(ids, vectors, threshold, max_size, texts=texts)]
        want = [(c.leader, c.members) for c in full_sort(ids, vectors, threshold, max_size, texts)]
        assert got == want, (threshold, max_size)
        assert sum(len(m) for _, m in got) == len(ids)
