"""Adversary check of the MCP endpoint the service mounts: an agent's key must stay bound to its agent.
Failed before its fix (the mounted endpoint resolved a key to its user only, so an agent key wrote as the
whole user, under no agent, which the REST routes refuse)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")
pytest.importorskip("fastapi")

from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from memos_integrations import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from tests.integration.conftest import free_port  # noqa: E402


async def test_an_agent_key_on_mcp_writes_under_its_agent(tmp_path: Path, embedder: Any) -> None:
    import httpx2
    import uvicorn

    mos = MOS(tmp_path / "home", embedder=embedder)
    mos.create_user("alice")
    keys = KeyStore.open(mos.home)
    agent_key, _ = keys.create("alice", agent_id="planner")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(mos, keys=keys, limits=Limits(rate=0)), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {agent_key}"}, timeout=60)
        async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp/", http_client=http)) as client:
            result = await client.call_tool("add_memory", {"text": "The planner booked the train for Friday."})
        assert not result.is_error, result
        (item,) = [m for g in mos.get_all(user_id="alice")["text_mem"] for m in g["memories"]]
        assert item.agent_id == "planner"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        keys.close()
        mos.close()
