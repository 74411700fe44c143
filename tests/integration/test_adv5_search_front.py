"""Adversary checks of the fast search front (server/search_front.py) that the front's own tests leave open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.textual.batching import batched  # noqa: E402


class Served(NamedTuple):
    emb: Any
    http: TestClient
    auth: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Served]:
    emb = batched(embedder)
    mos = MOS(tmp_path_factory.mktemp("adv5") / "home", embedder=emb)
    keys = KeyStore.open(mos.home / "mos.db")
    mos.create_user("dana")
    mos.create_cube_for_user("dana-c", owner_id="dana")
    mos.add(memory_content="Dana keeps her bike in the hallway.", mem_cube_id="dana-c", user_id="dana")
    auth = {"Authorization": f"Bearer {keys.create('dana')[0]}"}
    with TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False, search_threads=2)) as http:
        yield Served(emb, http, auth)
    keys.close()
    mos.close()
    emb.close()


def test_a_lone_surrogate_query_never_reaches_the_shared_batches(served: Served) -> None:
    """A lone surrogate is refused before anything embeds it (the body model; a query string cannot carry one).
    Sent into the shared batches it would fail the whole call it joined, and every other user's query in that
    call would be embedded again alone (a hostile user's cheap 422s taking other users' batches apart)."""
    calls: list[list[str]] = []
    inner = served.emb.batcher._embed_many

    def recording(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return inner(texts)  # type: ignore[no-any-return]

    served.emb.batcher._embed_many = recording
    try:
        for query in ("where is the bike \ud800", "\udfff"):
            r = served.http.post("/v1/memories/search", content=json.dumps({"query": query}),
                                 headers={**served.auth, "Content-Type": "application/json"})
            assert r.status_code == 422, r.text  # the body model refuses it before the front or the route
        assert not calls, calls  # the route answered without any embedding call
        r = served.http.get("/v1/memories/search", params={"q": "where is the bike?"}, headers=served.auth)
        assert r.status_code == 200 and r.json()["hits"], r.text
        assert calls == [["where is the bike?"]]
    finally:
        served.emb.batcher._embed_many = inner
