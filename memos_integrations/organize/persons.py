"""Per-person topics: what each speaker of a user's conversations said, clustered by topic.

A question about a person ("What activities does Melanie partake in?", "Where has Melanie
camped?") is answered by what that person said across many sessions. The user's topic clusters
(:mod:`.tree`) mix both speakers of a chat; here each speaker's own memories (``metadata["speaker"]``)
are clustered alone, with the same leader clustering (:func:`.tree.leader_clusters`: time order,
deterministic, appended memories never move earlier ones).

A person topic is stored as edges only, no item and no vector: each member other than the leader
links ``member --person_topic--> leader`` (metadata ``speaker``), so organising writes no summaries
into the vector index and a cluster costs ``members - 1`` edges. Retrieval
(``SearchPlan.person_topics``, :func:`memos_integrations.textual.shape_legs.person_topic_leg`) opens the clusters of the best
matching memories of the named person and ranks their members; it reads every member through the
search's filter, so a member deleted, archived or superseded after organising (or another user's)
is never returned through a cluster, and the next pass drops its edges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..items import Edge, MemoryItem
from ..textual.shape_legs import PERSON_TOPIC
from .tree import leader_clusters

__all__ = ["PERSON_TOPIC", "speaker_of", "wanted_person_topics"]


def speaker_of(item: MemoryItem) -> str | None:
    speaker = item.metadata.get("speaker")
    return speaker if isinstance(speaker, str) and speaker.strip() else None


def wanted_person_topics(
    members: Sequence[MemoryItem], vectors: Mapping[str, np.ndarray], threshold: float, max_size: int,
) -> dict[tuple[str, str, str], Edge]:
    """The ``person_topic`` edges one user's ``members`` (in time order) should have, by (src, type, dst).

    Example:
        >>> from memos_integrations.items import MemoryItem
        >>> a, b, c = (MemoryItem(text=t, id=i, metadata={"speaker": "Mel"}) for t, i in (("x", "a"), ("y", "b"), ("z", "c")))
        >>> v = {"a": np.array([1.0, 0.0]), "b": np.array([0.9, 0.436]), "c": np.array([0.0, 1.0])}
        >>> sorted(wanted_person_topics([a, b, c], v, 0.5, 40))
        [('b', 'person_topic', 'a')]
    """
    by_speaker: dict[str, list[MemoryItem]] = {}
    for m in members:
        who = speaker_of(m)
        if who is not None and m.id in vectors:
            by_speaker.setdefault(who, []).append(m)
    edges: dict[tuple[str, str, str], Edge] = {}
    for who in sorted(by_speaker):
        group = by_speaker[who]
        matrix = np.stack([vectors[m.id] for m in group]).astype(np.float32)
        for cluster in leader_clusters([m.id for m in group], matrix, threshold, max_size):
            for member in cluster.members[1:]:
                edges[(member, PERSON_TOPIC, cluster.leader)] = Edge(
                    member, cluster.leader, PERSON_TOPIC, 1.0, {"speaker": who})
    return edges
