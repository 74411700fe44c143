"""Issue 14, the tree (seventh session): near-duplicates make one topic, and summaries quote human text.

- 5,000 near-identical memories (one sentence with small variations, written again and again) give a
  handful of topic summaries, not one per ``max_cluster`` members; the summary lists them all
  (``sources``) and quotes the sentence once.
- A memory written through the LangGraph store (a JSON value indexed whole) is summarised by its
  text field, never by its serialized JSON.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from memos_integrations import MemCube
from memos_integrations.items import Kind, MemoryItem
from memos_integrations.langgraph import MemOSStore
from memos_integrations.organize import organize
from memos_integrations.organize.tree import leader_clusters


def variants(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    fill = ["", "Remember: ", "FYI ", "Note that ", "Just so you know, "]
    ends = [".", "!", " :)", ". Thanks.", ""]
    return [f"{rng.choice(fill)}my bank is Nordea and my account number ends in {rng.randint(1000, 9999)}{rng.choice(ends)}"
            for _ in range(n)]


def topics(cube: MemCube, user: str) -> list[MemoryItem]:
    return [s for s in cube.get_all(user_id=user, kinds=[Kind.SUMMARY]) if s.metadata.get("summary") == "topic"]


def test_five_thousand_near_duplicates_make_a_handful_of_summaries(cube: MemCube, embedder: Any) -> None:
    texts = variants(100)
    vectors = np.asarray(embedder.embed_documents(texts), dtype=np.float32)
    items = [MemoryItem(text=texts[k % 100], user_id="nils") for k in range(5000)]  # 100 variations, 50 copies each
    cube.add_items(items, vectors=np.stack([vectors[k % 100] for k in range(5000)]))
    cube.add(memory=["I adopted a beagle puppy called Pixel.", "Pixel the beagle chases squirrels in the park."],
             user_id="nils")
    report = organize(cube, reader=None)
    assert report.conflicts == 0  # "my bank is Nordea and my account ends in 1234" / "... 5678": one bank
    found = topics(cube, "nils")
    assert 1 <= len(found) <= 5, [(t.metadata["members"], t.text[:60]) for t in found]
    bank = max(found, key=lambda t: t.metadata["members"])
    assert bank.metadata["members"] >= 4900 and len(bank.sources) == 40  # a search opens (and checks) 40, not 5,000
    assert bank.metadata["near_duplicates"] == bank.metadata["members"] - 40
    from memos_integrations.storage.graph import SUMMARIZED_BY
    assert len(cube.graph.edges([bank.id], "in", [SUMMARIZED_BY])) == bank.metadata["members"]  # all listed
    assert bank.text.lower().count("nordea") == 1, bank.text  # the sentence once, not once per member quoted
    assert any("Pixel" in t.text for t in found)  # another topic is still its own
    again = organize(cube, reader=None, full=True)
    assert again.topics_written == 0


def test_near_duplicates_may_overflow_a_full_cluster_but_nothing_else_does() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(size=16).astype(np.float32)
    near = np.stack([base + 0.05 * rng.normal(size=16) for _ in range(30)]).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    ids = [f"m{n:02d}" for n in range(30)]
    plain = leader_clusters(ids, near, 0.5, 10)
    assert [len(c.members) for c in plain] == [10, 10, 10]  # as before: split by count
    same = ["the same words 1", "the same words 2"] * 15
    dup = leader_clusters(ids, near, 0.5, 10, texts=same)
    assert [len(c.members) for c in dup] == [30]
    letters = "abcdefghijklmnopqrstuvwxyz"
    other = [" ".join(letters[n % 26] + letters[n // 26] + letters[k] * 3 for k in range(4)) for n in range(30)]  # no two alike
    assert [len(c.members) for c in leader_clusters(ids, near, 0.5, 10, texts=other)] == [10, 10, 10]


def test_a_langgraph_store_memory_is_summarised_by_its_text_not_its_json(cube: MemCube) -> None:
    store = MemOSStore(cube, index=True)  # no fields: each value is indexed whole, as its JSON
    ns = ("users", "ola", "memories")
    store.put(ns, "a", {"text": "My bank is Nordea, and I pay my rent from it.", "tags": ["bank"]})
    store.put(ns, "b", {"text": "I pay my rent from my Nordea bank account every month."})
    store.put(ns, "c", {"text": "Nordea is the bank I use for rent."})
    assert any(i.text.startswith("{") for i in cube.get_all(user_id="ola"))  # the stored text is the JSON
    organize(cube, reader=None)
    found = topics(cube, "ola")
    assert found, "the three bank memories make a topic"
    for t in found:
        assert "{" not in t.text and '"text"' not in t.text, t.text
        assert "Nordea" in t.text
