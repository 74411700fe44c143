"""The access log (server/access_log.py): one line per request with method, path, status, ms and request id,
never the query string (a search's q= is the user's own text), and under uvicorn at info (memcube serve's
default) uvicorn's own line, which carried the query string, is gone."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.server.access_log import LOGGER  # noqa: E402

SECRET = "my bank PIN is 4921"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    home = tmp_path_factory.mktemp("access") / "home"
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))
    mos.create_user("alice")
    keys = KeyStore.open(home / "mos.db")
    auth = {"Authorization": f"Bearer {keys.create('alice')[0]}"}
    app = create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False)
    with TestClient(app) as http:
        assert http.post("/v1/memories", json={"text": SECRET}, headers=auth).status_code == 201
        yield app, auth
    keys.close()
    mos.close()


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER.name]


def test_one_line_per_request_without_the_query_string(world: tuple[Any, dict[str, str]],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    app, auth = world
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    with TestClient(app) as http:
        ok = http.get("/v1/memories/search", params={"q": SECRET, "k": 3}, headers=auth)
        posted = http.post("/v1/memories/search", json={"query": SECRET}, headers=auth)
        refused = http.get("/v1/memories/search", params={"q": SECRET})
        odd = http.get("/v1/memories/x%0Ay%20INFO:%20forged", headers=auth)
    lines = _lines(caplog)
    assert len(lines) == 4, lines
    for line, r, method, path in zip(lines, (ok, posted, refused, odd), ("GET", "POST", "GET", "GET"),
                                     ("/v1/memories/search", "/v1/memories/search", "/v1/memories/search",
                                      "/v1/memories/x%0Ay%20INFO%3A%20forged"), strict=True):
        got_method, got_path, status, ms, rid = line.split(" ")
        assert (got_method, got_path, int(status), rid) == (method, path, r.status_code, r.headers["x-request-id"])
        assert ms.endswith("ms") and float(ms[:-2]) >= 0
    assert not any("PIN" in line or "q=" in line or "\n" in line for line in lines)
    assert [int(line.split(" ")[2]) for line in lines] == [200, 200, 401, 404]


def test_nothing_is_logged_or_formatted_when_info_is_off(world: tuple[Any, dict[str, str]],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    app, auth = world
    caplog.set_level(logging.WARNING, logger=LOGGER.name)
    with TestClient(app) as http:
        assert http.get("/v1/memories/search", params={"q": "tea"}, headers=auth).status_code == 200
    assert _lines(caplog) == []


def test_under_uvicorn_at_info_the_only_access_line_is_ours(world: tuple[Any, dict[str, str]],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import httpx
    import uvicorn

    from tests.integration.conftest import free_port

    app, auth = world
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info"))  # memcube serve's
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.get(f"http://127.0.0.1:{port}/v1/memories/search", params={"q": SECRET}, headers=auth, timeout=30)
        assert r.status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        for handler in list(LOGGER.handlers):  # the handler on this test's captured stdout
            LOGGER.removeHandler(handler)
        LOGGER.setLevel(logging.NOTSET)
        LOGGER.propagate = True
    out = capsys.readouterr()
    logged = out.out + out.err
    access = [line for line in logged.splitlines() if "/v1/memories/search" in line]
    assert len(access) == 1, logged  # ours; uvicorn's own line (with the query string) is not written
    assert "GET /v1/memories/search 200 " in access[0] and r.headers["x-request-id"] in access[0]
    assert "PIN" not in logged and "q=" not in logged

