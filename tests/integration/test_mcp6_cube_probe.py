"""MCP tools and resources refuse another user's cube exactly as a cube that does not exist, from the registry
(server/reach.guard, shared with the REST routes), without opening the other user's cube or writing into its
audit log; the refusal is audited once in MOS's own log, where an operator reads it on stdio too (no key store
there). Before the fix every tool called MOS first: MOS opened the other user's cube and wrote the refusal into
it, which let a caller time which cube ids exist. A memory id of another user's cube reads as one that does not
exist on every tool and resource, by id alone or under one of the caller's cubes.

Driven by the real ``mcp`` client over streamable HTTP (the REST app's /mcp, with its keys) and in memory
(``build_server`` with a fixed user, what ``memcube mcp`` serves over stdio).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")
pytest.importorskip("fastapi")

from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.server.mcp import build_server  # noqa: E402
from tests.integration.conftest import free_port  # noqa: E402

CUBES = ("alice-c", "no-such-c")  # another user's cube, and none at all: every answer must be the same


class World:
    def __init__(self, mos: MOS, keys: KeyStore, ids: dict[str, str]) -> None:
        self.mos, self.keys, self.ids = mos, keys, ids


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    home = tmp_path / "home"
    with MOS(home, embedder=DeterministicFakeEmbedding(size=6)) as setup:
        setup.create_user("root", role="admin")  # an operator who reads MOS's audit log
        for user in ("alice", "bob"):
            setup.create_user(user)
            setup.create_cube_for_user(f"{user}-c", owner_id=user)
        ids = {user: setup.add(memory_content=f"{user}'s safe code is 1234", mem_cube_id=f"{user}-c",
                               user_id=user)[0].id for user in ("alice", "bob")}
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))  # a fresh process: no cube open yet
    keys = KeyStore.open(home / "mos.db")
    try:
        yield World(mos, keys, ids)
    finally:
        keys.close()
        mos.close()


@asynccontextmanager
async def _over_http(world: World, user: str) -> AsyncIterator[Client]:
    """The real client on the REST app's /mcp (uvicorn on loopback), authenticated by a key of ``user``."""
    import httpx2
    import uvicorn

    key, _ = world.keys.create(user)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(world.mos, keys=world.keys, limits=Limits(rate=0)),
                                           host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
        async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp/", http_client=http)) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@asynccontextmanager
async def _in_memory(world: World, user: str) -> AsyncIterator[Client]:
    """The server ``memcube mcp --user <user>`` runs over stdio, without the subprocess."""
    async with Client(build_server(world.mos, lambda _headers: user)) as client:
        yield client


TRANSPORTS = {"http": _over_http, "stdio-server": _in_memory}


def _text(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def _why(answer: tuple[Any, ...]) -> str:
    """The message of a tool's or a resource's answer, without the SDK's ``Error executing tool <name>: ``."""
    return re.sub(r"^Error executing tool \w+: ", "", answer[2])


async def _tool(client: Client, name: str, args: dict[str, Any], hide: str) -> tuple[Any, ...]:
    """The whole answer a client sees (error flag, text, structured content), ``hide`` masked."""
    result = await client.call_tool(name, args)
    return "tool", result.is_error, _text(result).replace(hide, "<hidden>"), result.structured_content


async def _resource(client: Client, uri: str, hide: str) -> tuple[Any, ...]:
    try:
        await client.read_resource(uri)
    except MCPError as exc:  # the JSON-RPC error: its code, message and data
        return type(exc).__name__, exc.code, exc.message.replace(hide, "<hidden>"), repr(exc.data).replace(hide, "<hidden>")
    return ("read",)


def _refusals(world: World) -> list[tuple[str, str | None, bool, dict[str, Any]]]:
    """MOS's audit log, oldest first, as the admin reads it (``GET /v1/audit?scope=mos``)."""
    return [(e["principal"], e["target"], e["allowed"], e["detail"])
            for e in reversed(world.mos.audit_log(user_id="root", limit=1000)) if e["action"] == "open"]


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_another_users_cube_answers_as_no_cube_on_every_tool_and_is_never_opened(world: World,
                                                                                     transport: str) -> None:
    memory = world.ids["alice"]
    answers: dict[str, list[Any]] = {}
    async with TRANSPORTS[transport](world, "bob") as client:
        for cube in CUBES:
            calls: list[tuple[str, dict[str, Any]]] = [
                ("add_memory", {"text": "bob was here", "cube_id": cube}),
                ("search_memory", {"query": "safe code", "cube_id": cube}),
                ("get_memory", {"memory_id": memory, "cube_id": cube}),
                ("update_memory", {"memory_id": memory, "text": "changed", "cube_id": cube}),
                ("forget_memory", {"memory_id": memory, "cube_id": cube}),
                ("memory_history", {"memory_id": memory, "cube_id": cube}),
                ("give_feedback", {"text": "the code changed", "cube_id": cube})]
            answers[cube] = [await _tool(client, name, args, cube) for name, args in calls]
            answers[cube] += [await _resource(client, f"memcube://cubes/{cube}/stats", cube),
                              await _resource(client, f"memcube://cubes/{cube}/memories/{memory}/history", cube)]
    assert answers["alice-c"] == answers["no-such-c"]  # the same error type and message, tool by tool
    assert [a[:2] for a in answers["alice-c"]] == [("tool", True)] * 7 + [("MCPError", answers["alice-c"][7][1])] * 2
    assert {_why(a) for a in answers["alice-c"]} == {
        "AccessDeniedError: no such cube, or you may not do this there; list the cubes you can reach with "
        "list_cubes, or ask the cube's owner to share it"}
    assert "alice-c" not in world.mos._cubes  # never opened for bob
    # one row per refusal in MOS's log, the same for both cubes; none in alice's cube
    rows = _refusals(world)
    assert rows == [("bob", cube, False, {"reason": "no cube this user can reach"}) for cube in CUBES for _ in range(9)]
    assert [e for e in world.mos.cube("alice-c", user_id="alice").audit_log(100) if not e.get("allowed", True)] == []
    assert world.mos.get("alice-c", memory, user_id="alice").text == "alice's safe code is 1234"  # untouched


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_another_users_memory_id_answers_as_no_such_memory(world: World, transport: str) -> None:
    """By id alone (the tools look only in the caller's cubes) and under the caller's own cube."""
    theirs, nobodys = world.ids["alice"], "0" * 32
    answers: dict[str, list[Any]] = {}
    async with TRANSPORTS[transport](world, "bob") as client:
        assert not (await client.call_tool("get_memory", {"memory_id": world.ids["bob"]})).is_error  # the tools work
        for memory in (theirs, nobodys):
            answers[memory] = []
            for where in ({}, {"cube_id": "bob-c"}):
                for name, args in (("get_memory", {}), ("memory_history", {}), ("forget_memory", {}),
                                   ("update_memory", {"text": "changed"})):
                    answers[memory].append(await _tool(client, name, {"memory_id": memory, **args, **where}, memory))
            answers[memory].append(await _resource(client, f"memcube://cubes/bob-c/memories/{memory}/history", memory))
    assert answers[theirs] == answers[nobodys]
    assert all(a[1] is True and _why(a).startswith("ItemNotFoundError") for a in answers[theirs][:8])
    assert "alice-c" not in world.mos._cubes
    assert world.mos.get("alice-c", theirs, user_id="alice").version == 1  # not forgotten, not changed


async def test_a_read_share_still_reads_and_a_write_there_is_mos_s_refusal_audited_in_the_cube(world: World) -> None:
    """A cube the caller reaches is MOS's to check, as before: the guard only hides cubes out of reach."""
    world.mos.share_cube_with_user("alice-c", "bob", "read", user_id="alice")
    async with _in_memory(world, "bob") as client:
        got = await client.call_tool("get_memory", {"memory_id": world.ids["alice"], "cube_id": "alice-c"})
        assert not got.is_error and got.structured_content["cube_id"] == "alice-c"
        refused = await client.call_tool("add_memory", {"text": "bob was here", "cube_id": "alice-c"})
        assert refused.is_error and "AccessDeniedError: no such cube" in _text(refused)
    assert [e["principal"] for e in world.mos.cube("alice-c", user_id="alice").audit_log(100) if not e["allowed"]] == [
        "bob"]
    assert _refusals(world) == []
