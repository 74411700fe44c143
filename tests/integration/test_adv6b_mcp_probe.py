"""adv6b: on MCP, another user's cube must cost what a cube that does not exist costs, as on REST
(test_svc6_cube_probe): the answer text is one already, but MOS opens the other user's cube for the caller
(26 ms the first time, and its memory) and writes the refusal into that cube's audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402
from mcp import Client  # noqa: E402

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server.mcp import build_server  # noqa: E402


async def test_mcp_refuses_another_users_cube_without_opening_or_writing_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with MOS(home, embedder=DeterministicFakeEmbedding(size=6)) as setup:
        for user in ("alice", "bob"):
            setup.create_user(user)
            setup.create_cube_for_user(f"{user}-c", owner_id=user)
        setup.add(memory_content="the safe code is 1234", mem_cube_id="alice-c", user_id="alice")
    with MOS(home, embedder=DeterministicFakeEmbedding(size=6)) as mos:  # a fresh process: no cube open yet
        answers: dict[str, list[Any]] = {}
        async with Client(build_server(mos, lambda _h: "bob")) as client:
            for cube in ("alice-c", "no-such-c"):
                calls = [("search_memory", {"query": "code", "cube_id": cube}),
                         ("add_memory", {"text": "x", "cube_id": cube}),
                         ("get_memory", {"memory_id": "m1", "cube_id": cube})]
                answers[cube] = [(r.is_error, str(r.content).replace(cube, "<cube>"))
                                 for r in [await client.call_tool(name, args) for name, args in calls]]
        assert answers["alice-c"] == answers["no-such-c"] and all(e for e, _ in answers["alice-c"])
        opened = "alice-c" in mos._cubes
        denials = [e for e in mos.cube("alice-c", user_id="alice").audit_log(100) if not e.get("allowed", True)]
        assert (opened, denials) == (False, [])  # never opened for bob, nothing written into alice's cube
