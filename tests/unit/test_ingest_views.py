"""Ingest embeds each view once (vector version 3): a message's context is made of the previous
turn's own views, which that turn already embedded (same batch, or the view cache across adds),
so a session costs one model pass per view. The vector stays a function of the item alone: editing
or deleting the previous turn, a cold cache, another writer, or a reindex give the same vector."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from memos_integrations import MemCube
from memos_integrations.errors import InvalidInputError
from memos_integrations.items import Kind, MemoryItem
from memos_integrations.textual.embed import MiniLMEmbedder, embed_views, item_vectors, view_cache
from memos_integrations.textual.filters import MemoryFilter

TURNS = [
    {"role": "user", "name": "Mel", "content": "Did you do anything fun at the weekend?", "id": "D1:1"},
    {"role": "user", "name": "Caro", "content": "Yes! Went hiking with my dog.", "id": "D1:2",
     "caption": "a dog standing on a mountain trail"},
    {"role": "user", "name": "Mel", "content": "Where did you go?", "id": "D1:3"},
    {"role": "user", "name": "Caro", "content": "Up the ridge above the lake, last Saturday.", "id": "D1:4"},
]


class Counting:
    """The session's MiniLM behind a new object (so a view cache of its own) that records every text
    it is asked to embed, and can be told to fail."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.name, self.dimension = inner.name, inner.dimension
        self.texts: list[str] = []
        self.poison = False

    @property
    def fingerprint(self) -> str:
        return str(self.inner.fingerprint)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        out = self.inner.embed_documents(texts)
        return np.full_like(out, np.nan) if self.poison else out

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)  # type: ignore[no-any-return]


@pytest.fixture
def counting(embedder):  # type: ignore[no-untyped-def]
    return Counting(embedder)


@pytest.fixture
def ccube(tmp_path: Path, counting: Counting):  # type: ignore[no-untyped-def]
    c = MemCube.init_from_dir(tmp_path / "cube", embedder=counting)
    counting.texts.clear()
    yield c
    c.close()


def _vectors(cube: MemCube, ids: list[str]) -> np.ndarray:
    got = cube.store.vectors_by_id(ids)
    return np.stack([got[i] for i in ids])


def _fresh(embedder: MiniLMEmbedder, items: list[MemoryItem]) -> np.ndarray:
    """What a reindex in another process computes: a new embedder object, nothing cached."""
    return item_vectors(Counting(embedder), items)


def test_a_session_embeds_each_own_view_once_and_nothing_else(
    ccube: MemCube, counting: Counting, embedder: MiniLMEmbedder,
) -> None:
    items = ccube.add(messages=TURNS, user_id="u", session_id="s")
    own = [t for it in items for t, _ in embed_views(it)[: 2 if it.metadata.get("caption") else 1]]
    assert sorted(counting.texts) == sorted(own)  # 5 views for 4 turns, no turn embedded with its neighbour
    assert len(counting.texts) == 5
    # a turn's context is the previous turn's own views, a quarter of the weight of its own content
    assert embed_views(items[2]) == [("Mel: Where did you go?", 2.0), ("Caro: Yes! Went hiking with my dog.", 0.25),
                                     ("Caro shares a photo: a dog standing on a mountain trail", 0.25)]
    assert embed_views(items[3]) == [("Caro: Up the ridge above the lake, last Saturday.", 2.0),
                                     ("Mel: Where did you go?", 0.5)]
    stored = _vectors(ccube, [it.id for it in items])
    assert np.allclose(np.sum(stored * _fresh(embedder, items), axis=1), 1.0, atol=1e-5)


def test_a_turn_added_alone_reuses_the_previous_turns_views_and_a_cold_cache_gives_the_same_vector(
    ccube: MemCube, counting: Counting, embedder: MiniLMEmbedder,
) -> None:
    ccube.add(messages=TURNS[:1], user_id="u", session_id="s")
    counting.texts.clear()
    (second,) = ccube.add(messages=TURNS[1:2], user_id="u", session_id="s")
    assert "Did you do anything fun" in second.context
    assert len(counting.texts) == 2  # its words and its photo; the question came from the cache
    cache = view_cache(counting)
    assert cache is not None
    cache.data.clear()  # as in a new process: the previous turn is embedded again, to the same vector
    counting.texts.clear()
    (third,) = ccube.add(messages=TURNS[2:3], user_id="u", session_id="s")
    assert sorted(counting.texts) == sorted(["Mel: Where did you go?", "Caro: Yes! Went hiking with my dog.",
                                            "Caro shares a photo: a dog standing on a mountain trail"])
    stored = _vectors(ccube, [second.id, third.id])
    assert np.allclose(np.sum(stored * _fresh(embedder, [second, third]), axis=1), 1.0, atol=1e-5)


def test_editing_or_deleting_the_previous_turn_keeps_the_next_turns_vector_and_reindex_agrees(
    ccube: MemCube, embedder: MiniLMEmbedder,
) -> None:
    first, second = ccube.add(messages=TURNS[:1] + TURNS[2:3], user_id="u", session_id="s")
    before = _vectors(ccube, [second.id])[0]
    ccube.update(first.id, text="Did you go swimming?")
    assert np.allclose(_vectors(ccube, [second.id])[0], before)
    ccube.delete([first.id])
    ccube.reindex(reembed=True)  # the context is the turn as it was answered, frozen in the item
    assert float(_vectors(ccube, [second.id])[0] @ before) == pytest.approx(1.0, abs=1e-5)
    assert ccube.search("anything fun at the weekend", user_id="u", top_k=1, plan="fast")[0].item.id == second.id


def test_a_failed_or_nan_embedding_stores_nothing_and_caches_nothing(ccube: MemCube, counting: Counting) -> None:
    counting.poison = True
    with pytest.raises(InvalidInputError, match="NaN"):
        ccube.add(messages=TURNS[:2], user_id="u", session_id="s")
    assert ccube.store.max_rid() == 0
    cache = view_cache(counting)
    assert cache is not None and not cache.data
    counting.poison = False
    items = ccube.add(messages=TURNS[:2], user_id="u", session_id="s")
    assert np.isfinite(_vectors(ccube, [it.id for it in items])).all()


def test_two_writers_adding_to_one_session_at_once_get_the_vectors_of_their_own_context(
    ccube: MemCube, embedder: MiniLMEmbedder,
) -> None:
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            start.wait(timeout=10)
            for n in range(4):
                ccube.add(messages=[{"role": "user", "name": name, "content": f"{name} says thing {n}"}],
                          user_id="u", session_id="s")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(who,)) for who in ("Ann", "Bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    items = ccube.text_mem.store.list_items(MemoryFilter(session_id="s", kinds=[Kind.MESSAGE]))
    assert len(items) == 8
    lines = {f"{it.metadata['speaker']}: {it.text}" for it in items}
    for it in items:  # every context line is a turn of this session, whichever writer won the race
        assert all(line in lines for line in it.context.split("\n")[:-1])
    stored = _vectors(ccube, [it.id for it in items])
    assert np.allclose(np.sum(stored * _fresh(embedder, items), axis=1), 1.0, atol=1e-5)


def test_a_free_form_multi_line_context_keeps_the_version_2_rule() -> None:
    item = MemoryItem(text="the answer", context="a title\nsome notes")
    assert embed_views(item) == [("the answer", 2.0), ("a title\nsome notes\nthe answer", 1.0)]
    assert embed_views(MemoryItem(text="a fact", context="one line")) == [("a fact", 1.0)]


def test_a_previous_turn_with_line_breaks_is_one_turn_whose_views_are_reused(ccube: MemCube, counting: Counting) -> None:
    ccube.add(messages=[{"role": "user", "name": "Ann", "content": "Shopping list:\n- eggs\n- flour"}],
              user_id="u", session_id="s")
    counting.texts.clear()
    (reply,) = ccube.add(messages=[{"role": "user", "name": "Bob", "content": "Got them."}], user_id="u", session_id="s")
    assert embed_views(reply)[1:] == [("Ann: Shopping list:\n- eggs\n- flour", 0.5)]
    assert counting.texts == ["Bob: Got them."]


def test_own_views_are_always_embedded_only_context_comes_from_the_cache(ccube: MemCube, counting: Counting) -> None:
    """What is written is embedded by the model now (an update, a re-added text); the cache only stands
    in for a previous turn's views."""
    (fact,) = ccube.add(memory="The meeting is on Tuesday.")
    counting.texts.clear()
    ccube.update(fact.id, text="The meeting is on Tuesday.", tags=["again"])  # same text: no new vector
    ccube.add(memory="The meeting is on Tuesday.")
    assert counting.texts == ["The meeting is on Tuesday."]
