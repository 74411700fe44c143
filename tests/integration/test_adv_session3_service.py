"""Adversary checks (session 3) on the service: each test failed on the code it was written against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402

from memos_integrations import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402


# -- finding: a store batch of more searches than the key's burst was a 429 whose retry-after never helped
def test_a_batch_no_wait_can_pay_for_is_refused_as_too_large_not_rate_limited(tmp_path: Path) -> None:
    mos = MOS(tmp_path / "home", embedder=DeterministicFakeEmbedding(size=6))
    keys = KeyStore.open(tmp_path / "home" / "mos.db")
    mos.create_user("alice")
    mos.create_cube_for_user("alice_cube", owner_id="alice")
    key = keys.create("alice")[0]
    app = create_app(mos, keys=keys, limits=Limits(rate=0.01, burst=5), mcp=False)
    headers = {"Authorization": f"Bearer {key}"}

    def batch(n: int) -> Any:
        ops = [{"op": "search", "namespace_prefix": ["notes"], "query": f"q{i}"} for i in range(n)]
        return http.post("/v1/faces/store/batch", json={"cube_id": "alice_cube", "ops": ops}, headers=headers)

    with TestClient(app, raise_server_exceptions=False) as http:
        # a full bucket (5) pays the request (1) and at most 4 more: 6 searches can never pass, and a
        # client that honours retry-after (100 s here) would wait and be refused again, for ever
        big = batch(6)
        assert big.status_code == 422, big.text
        assert "split" in big.json()["error"]["message"] and big.headers.get("retry-after") is None
        assert batch(4).status_code == 200  # the refusal spent its request's token only: 4 left
    mos.close()
