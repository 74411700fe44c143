"""What several server processes on one home share: rate buckets (one limit, not one per process), key
revocation (reaches every process within the key cache's time), and cubes (an embedded cube cannot be
shared, so ``--workers`` refuses it; a shared service refuses to create one). Two apps on one home
stand in for two workers: each has its own MOS and its own connection to ``mos.db``, as a worker does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from memos_integrations.errors import InvalidInputError  # noqa: E402
from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.server.workers import embedded_cubes, serve_workers  # noqa: E402


class Worker:
    """One server process's state: its own MOS, key store connection and app."""

    def __init__(self, home: Path, embedder: Any, limits: Limits, **kw: Any) -> None:
        self.mos = MOS(home, embedder=embedder)
        self.keys = KeyStore.open(home / "mos.db")
        self.client = TestClient(create_app(self.mos, keys=self.keys, limits=limits, mcp=False, **kw))

    def close(self) -> None:
        self.client.close()
        self.keys.close()
        self.mos.close()


@pytest.fixture()
def home(tmp_path: Path, embedder: Any) -> Iterator[tuple[Path, str]]:
    h = tmp_path / "home"
    with MOS(h, embedder=embedder) as mos:
        mos.create_user("alice")
    keys = KeyStore.open(h / "mos.db")
    token, _ = keys.create("alice")
    keys.close()
    yield h, token


def test_two_workers_spend_one_bucket(home: tuple[Path, str], embedder: Any) -> None:
    h, token = home
    limits = Limits(rate=0.01, burst=4)
    a, b = Worker(h, embedder, limits), Worker(h, embedder, limits)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        codes = [w.client.get("/v1/cubes", headers=auth).status_code for w in (a, b, a, b, a, b)]
        # an in-process bucket per worker would have let 8 through; the shared one lets exactly the burst
        assert codes == [200, 200, 200, 200, 429, 429]
        refused = b.client.get("/v1/cubes", headers=auth)
        assert refused.json()["error"]["type"] == "RateLimitedError" and int(refused.headers["Retry-After"]) >= 1
    finally:
        a.close()
        b.close()


def test_revocation_reaches_a_worker_within_the_key_cache_time(home: tuple[Path, str], embedder: Any) -> None:
    h, token = home
    w = Worker(h, embedder, Limits(rate=0, key_cache_seconds=0.3))
    cli = KeyStore.open(h / "mos.db")  # `memcube keys revoke` runs in another process, with its own connection
    try:
        auth = {"Authorization": f"Bearer {token}"}
        assert w.client.get("/v1/cubes", headers=auth).status_code == 200  # verified, now cached
        key_id = cli.list_keys("alice")[0].key_id
        assert cli.revoke(key_id)
        time.sleep(0.35)
        assert w.client.get("/v1/cubes", headers=auth).status_code == 401
    finally:
        cli.close()
        w.close()


def test_the_key_cache_never_accepts_another_secret_for_a_cached_key_id(home: tuple[Path, str], embedder: Any) -> None:
    h, token = home
    w = Worker(h, embedder, Limits(rate=0, key_cache_seconds=60))
    try:
        assert w.client.get("/v1/cubes", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        forged = token[: token.rindex("_") + 1] + "A" * 43  # the cached key id, a wrong secret
        r = w.client.get("/v1/cubes", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401
        refusals = [e for e in w.keys.audit_log(10) if e["action"] == "authenticate"]
        assert refusals and not refusals[0]["allowed"]  # checked against the store and audited, not waved off
        # an in-process revocation plus forget() is immediate, even with a long cache
        key_id = w.keys.list_keys("alice")[0].key_id
        w.keys.revoke(key_id)
        w.client.app.state.authenticator.forget(key_id)  # type: ignore[attr-defined]
        assert w.client.get("/v1/cubes", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    finally:
        w.close()


def test_workers_refuse_a_home_with_embedded_cubes(home: tuple[Path, str], embedder: Any) -> None:
    h, _ = home
    with MOS(h, embedder=embedder) as mos:
        mos.create_cube_for_user("notes", owner_id="alice")
    assert embedded_cubes(h) == ["notes"]
    with pytest.raises(InvalidInputError, match="'notes' keep their vectors embedded"):
        serve_workers(str(h), workers=2)
    with pytest.raises(InvalidInputError, match="2 or more"):
        serve_workers(str(h), workers=1)


def test_a_shared_service_without_a_cube_server_refuses_to_create_cubes(home: tuple[Path, str], embedder: Any) -> None:
    h, token = home
    w = Worker(h, embedder, Limits(rate=0), shared=True)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        for r in (w.client.post("/v1/cubes", json={"cube_id": "mine"}, headers=auth),
                  w.client.post("/v1/memories", json={"text": "first write makes the default cube"}, headers=auth)):
            assert r.status_code == 501 and "--cubes-on" in r.json()["error"]["message"]
        assert w.mos.list_cubes("alice") == []  # nothing half-made
    finally:
        w.close()
