"""The dense leg (issue 14, must-have 5): a message's vector is made of its own words, its shared
photo and its place in the conversation, each embedded on its own (not one text holding all three);
cubes whose vectors were made the old way keep working and are told how to re-embed."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from memos_integrations import MemCube
from memos_integrations.textual.embed import VECTOR_TEXT_META, VECTOR_TEXT_VERSION, embed_views, item_vectors

TURNS = [
    {"role": "user", "name": "Mel", "content": "Did you do anything fun at the weekend?", "id": "D1:1"},
    {"role": "user", "name": "Caro", "content": "Yes! Went hiking with my dog.", "id": "D1:2",
     "caption": "a dog standing on a mountain trail"},
]


def _vector(cube: MemCube, item_id: str) -> np.ndarray:
    return cube.store.vectors_by_id([item_id])[item_id]


def test_a_message_vector_averages_its_views_not_one_text_with_everything(cube: MemCube, embedder) -> None:  # type: ignore[no-untyped-def]
    first, second = cube.add(messages=TURNS, user_id="u", session_id="s")
    assert second.text == "Yes! Went hiking with my dog. [shares a photo: a dog standing on a mountain trail]"
    assert second.metadata["caption"] == "a dog standing on a mountain trail"
    views = embed_views(second)
    assert views == [
        ("Caro: Yes! Went hiking with my dog.", 1.0), ("Caro shares a photo: a dog standing on a mountain trail", 1.0),
        ("Mel: Did you do anything fun at the weekend?", 0.5),  # the previous turn's own view (version 3)
    ]
    own, photo, previous = embedder.embed_documents([t for t, _ in views])
    expected = own + photo + 0.5 * previous  # own content (words, photo) four times the weight of the context
    expected /= np.linalg.norm(expected)
    stored = _vector(cube, second.id)
    assert float(stored @ expected) == pytest.approx(1.0, abs=1e-5)
    # version 1 embedded the whole text (caption inside) as one: that is not what is stored any more
    old = embedder.embed_documents([second.embed_text])[0]
    assert float(stored @ old) < 0.99
    # a session's first turn and a plain fact have one view, as before
    assert float(_vector(cube, first.id) @ embedder.embed_documents([first.embed_text])[0]) == pytest.approx(1.0, abs=1e-5)


def test_the_dense_leg_finds_a_turn_by_what_its_photo_shows(cube: MemCube) -> None:
    cube.add(messages=TURNS + [
        {"role": "user", "name": "Mel", "content": "Nice, I spent the day baking bread.", "id": "D1:3"},
        {"role": "user", "name": "Caro", "content": "Yum, send me some!", "id": "D1:4"},
    ], user_id="u", session_id="s")
    hits = cube.search("mountain trail", user_id="u", top_k=1, plan="fast")
    assert hits[0].item.sources == ["D1:2"]


def test_an_update_re_embeds_with_the_views(cube: MemCube, embedder) -> None:  # type: ignore[no-untyped-def]
    _, second = cube.add(messages=TURNS, user_id="u", session_id="s")
    new = cube.update(second.id, text="Yes! Went sailing.")
    assert float(_vector(cube, new.id) @ item_vectors(embedder, [new])[0]) == pytest.approx(1.0, abs=1e-5)


def test_a_new_cube_records_its_vector_version(cube: MemCube) -> None:
    assert cube.store.get_meta(VECTOR_TEXT_META) == VECTOR_TEXT_VERSION


def test_an_older_cube_says_how_to_re_embed_and_reindex_brings_it_up_to_date(tmp_path, embedder, caplog) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "old"
    cube = MemCube.create(path, embedder=embedder)
    _, second = cube.add(messages=TURNS, user_id="u", session_id="s")
    # make it a version-1 cube: no version recorded, the vector of the whole text
    cube.store.set_meta(VECTOR_TEXT_META, "1")
    cube.store.put_vectors({second.id: (second.embed_text, embedder.embed_documents([second.embed_text])[0])})
    cube.close()
    with caplog.at_level(logging.WARNING, logger="memos_integrations.textual.memory"):
        cube = MemCube.open(path, embedder=embedder)
    assert "reindex --reembed" in caplog.text
    assert cube.search("mountain trail", user_id="u", top_k=1)  # still searchable meanwhile
    cube.reindex(reembed=True)
    assert cube.store.get_meta(VECTOR_TEXT_META) == VECTOR_TEXT_VERSION
    assert float(_vector(cube, second.id) @ item_vectors(embedder, [second])[0]) == pytest.approx(1.0, abs=1e-5)
    cube.close()


def test_an_imported_export_gets_the_vectors_an_add_gives(cube: MemCube, embedder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``import_jsonl`` embeds each message's views as ``add`` does, so a restored cube searches alike."""
    _, second = cube.add(messages=TURNS, user_id="u", session_id="s")
    cube.export_jsonl(tmp_path / "out.jsonl")
    with MemCube.init_from_dir(tmp_path / "restored", embedder=embedder) as restored:
        restored.import_jsonl(tmp_path / "out.jsonl")
        assert float(_vector(restored, second.id) @ _vector(cube, second.id)) == pytest.approx(1.0, abs=1e-5)
