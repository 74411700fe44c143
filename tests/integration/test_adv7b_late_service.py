"""adv7b: the service's embedder (server/late_embed.py ``LateBatched``) as the late preset's token source.

Its documents' token rows reach a write only through ``late_recent``, an LRU of the last 64 texts by text.
- A write of more than 64 texts in one call (an add of a long conversation, a LangChain ``add_texts``)
  embeds them in one pass in this process, puts every text's rows into the LRU, then reads them back from
  it: the first texts were already evicted by the last ones, and their items are written without token
  vectors (an embedded add writes them all).
- A keyed add's text is embedded before the cube's transaction (``cache_scope.fresh_views``) and its rows
  are read from the LRU when the write runs: 64 texts embedded by other requests while it waits for the
  transaction evict them, and the memory is written without token vectors.
Either way ``late`` then ranks those memories as ``learned`` does, with nothing said.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from memos_integrations import MemCube  # noqa: E402
from memos_integrations.server.late_embed import RECENT  # noqa: E402
from memos_integrations.server.service import serving_embedder  # noqa: E402
from memos_integrations.textual import cache_scope  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    emb = serving_embedder(tmp_path_factory.mktemp("adv7b") / "home", "fp32", embed_process=False)
    yield emb
    emb.close()


def _tokens(cube: MemCube) -> dict[str, bytes]:
    text = {it.id: it.text for it in cube.text_mem.list_items()}
    return {text[i]: bytes(d) for i, d in cube.text_mem.store.db.read("SELECT item_id, data FROM late_tokens")}


def _turns(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "name": "Ann" if i % 2 else "Bob",
             "content": f"Turn {i}: I went hiking near lake number {i} with my dog Rex."} for i in range(n)]


def test_an_add_of_more_texts_than_the_lru_holds_keeps_every_items_tokens(served: Any, embedder: Any,
                                                                           tmp_path: Path) -> None:
    turns = _turns(RECENT + 16)
    cubes = {}
    for name, e in (("served", served), ("embedded", embedder)):
        cubes[name] = MemCube.create(tmp_path / name, embedder=e)
        cubes[name].add(messages=turns, user_id="u", session_id="s")
    want = _tokens(cubes["embedded"])
    assert len(want) == len(turns)
    got = _tokens(cubes["served"])
    missing = sorted(set(want) - set(got))
    assert not missing, f"{len(missing)} of {len(turns)} items written without token vectors"
    for c in cubes.values():
        c.close()


def test_a_keyed_add_keeps_its_tokens_while_others_embed_before_its_transaction(served: Any, tmp_path: Path) -> None:
    cube = MemCube.create(tmp_path / "keyed", embedder=served)
    fact = "Caroline has been volunteering at the animal shelter on Thursdays."
    with cache_scope.fresh_views(served, [fact]):  # what server/idempotent.write_once does before the transaction
        for i in range(RECENT):  # other requests' one-text adds, embedded while this one waits for the cube
            served.embed_documents([f"Another user's note number {i} about their garden."])
        cube.add(memory=fact, user_id="u")
    assert fact in _tokens(cube)
    cube.close()


def test_a_keyed_add_alone_keeps_its_tokens(served: Any, tmp_path: Path) -> None:
    cube = MemCube.create(tmp_path / "alone", embedder=served)
    fact = "Melanie's family went to a concert and the kids danced all night."
    with cache_scope.fresh_views(served, [fact]):
        cube.add(memory=fact, user_id="u")
    assert fact in _tokens(cube)
    cube.close()


def test_a_keyed_add_with_the_in_process_minilm_keeps_its_tokens(embedder: Any, tmp_path: Path) -> None:
    """serving_embedder returns None when a home holds a cube of another embedder: its MiniLM cubes open the
    in-process MiniLMEmbedder, whose pass hands its rows to an open capture only; fresh_views opens none."""
    cube = MemCube.create(tmp_path / "plain", embedder=embedder)
    fact = "Caroline has been volunteering at the animal shelter on Thursdays."
    with cache_scope.fresh_views(embedder, [fact]):
        cube.add(memory=fact, user_id="u")
    assert fact in _tokens(cube)
    cube.close()


def test_a_langchain_write_of_many_texts_embedded_first_keeps_every_items_tokens(served: Any, tmp_path: Path) -> None:
    """routes_vectors' staged write: idempotent.write_once(..., rows["texts"]) embeds every text before the
    transaction in one call (cache_scope.fresh_views), then writes them; the rows are read back from the LRU."""
    cube = MemCube.create(tmp_path / "lc", embedder=served)
    texts = [t["content"] for t in _turns(RECENT + 16)]
    with cache_scope.fresh_views(served, texts):
        for t in texts:
            cube.add(memory=t, user_id="u")
    got = _tokens(cube)
    missing = [t for t in texts if t not in got]
    assert not missing, f"{len(missing)} of {len(texts)} texts written without token vectors"
    cube.close()
