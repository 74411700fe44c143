"""The MCP server: MOS's memories as tools and resources for desktop agents (Claude Desktop, Cursor, any MCP client).

Built with the official ``mcp`` SDK (``MCPServer``, the ``[server]`` extra). Two transports share one
server definition, :func:`build_server`:

- **stdio** (``memcube mcp --home H --user U``, :func:`run_stdio`): a desktop client launches the process;
  every call acts as the one user named on the command line.
- **streamable HTTP** (:func:`mcp_http_app`, mounted at ``/mcp`` by the REST app): every HTTP request is
  authenticated by ``resolve_user(headers)`` (the REST app's API keys) before the MCP layer sees it, and
  every tool call resolves its user again from the request headers it carries.

Access: every tool and resource calls MOS (or a MOS-issued :class:`~memos_integrations.mos_view.CubeView`)
as the resolved user, so MOS decides and audits; nothing here re-implements an access rule. A ``cube_id``
the user cannot reach at all is refused first, from the registry alone, by :func:`.reach.guard` (the REST
routes' check): another user's cube is never opened nor written to, and it answers exactly as a cube that
does not exist (same error, same message, same cost); the refusal is audited in MOS's own log
(:meth:`MOS.audit_log`, ``GET /v1/audit?scope=mos``), which exists on stdio too, where there is no key
store. A memory id is only looked up in cubes the user reaches, so another user's reads as unknown.

Sync/async: the engine is synchronous; each tool runs its MOS call in a worker thread with
:func:`memos_integrations.aio.in_thread`, so the event loop keeps serving other clients.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field

from ..aio import in_thread
from ..errors import (
    AccessDeniedError,
    CubeNotFoundError,
    InvalidInputError,
    ItemNotFoundError,
    MemosError,
    require,
)
from ..items import MemoryItem
from ..textual import cache_scope
from .errors import RateLimitedError
from .ids import MAX_NAME_CHARS, check_id
from .late_embed import search_plan
from .reach import guard

require("mcp", "server")

from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ResourceError, ToolError  # noqa: E402
from mcp.server.transport_security import TransportSecuritySettings  # noqa: E402
from mcp.types import ToolAnnotations  # noqa: E402
from starlette.types import Receive, Scope, Send  # noqa: E402

T = TypeVar("T")

#: ``resolve_user(headers)`` -> the user id a request acts as; raises a MemosError for a missing or bad key.
#: stdio passes ``None`` for headers (the process's user is fixed on the command line).
#: It may return ``(user_id, agent_id)`` instead: an agent's key files what it writes under its agent.
ResolveUser = Callable[[Mapping[str, str] | None], "str | tuple[str, str | None]"]


def _who(resolve_user: ResolveUser, headers: Mapping[str, str] | None) -> tuple[str, str | None]:
    """The user and (for an agent's key) the agent a request acts as."""
    found = resolve_user(headers)
    return (found, None) if isinstance(found, str) else (found[0], found[1])

INSTRUCTIONS = (
    "Long-term memory for this user. Call search_memory before answering anything that may depend on what "
    "the user told you before (preferences, facts about them, past events, decisions). Call add_memory when "
    "the user states something worth remembering across conversations. Use update_memory to correct a memory "
    "and forget_memory when the user asks you to forget it. Memory ids come from search_memory or add_memory."
)

# Descriptions the model reads: when to call, what comes back.
_D_ADD = (
    "Store one memory for the user: a self-contained fact, preference or event in plain language, e.g. "
    "'The user prefers genmaicha over sencha.' Call it when the user tells you something worth remembering "
    "in later conversations; do not store small talk. Returns the stored memory with its id."
)
_D_SEARCH = (
    "Search the user's long-term memory by meaning and keywords. Call it before answering questions that may "
    "depend on earlier conversations (preferences, personal facts, past events). Returns up to k memories, "
    "best first, each with id, text, score (higher is better) and when it was stored. A memory that contradicts "
    "another of the user's has 'conflicts' (the other memories' texts): they cannot both be true, so say which "
    "you rely on, or ask."
)
_D_GET = "Read one memory by id (from search_memory or add_memory). Returns its text, version, tags and metadata."
_D_UPDATE = (
    "Correct or change a memory by id: give the new full text (and optionally tags or metadata). The old text "
    "is kept as an earlier version (see memory_history). Returns the new version."
)
_D_FORGET = (
    "Forget a memory by id, e.g. when the user asks you to forget something or it is no longer true. Search "
    "no longer returns it; its history stays for audit. Returns how many memories were forgotten."
)
_D_HISTORY = "Every version of one memory, oldest first: how its text changed, when, and whether it was forgotten."
_D_FEEDBACK = (
    "Tell the memory service that a memory it gave was wrong, outdated or incomplete, in plain language, e.g. "
    "'The user moved from Berlin to Lisbon in May.' Use it when the user corrects something you recalled."
)
_D_CUBES = "List the memory cubes (stores) this user can reach and their access level (owner, write, read)."

CubeArg = Annotated[
    str | None,
    Field(description="The memory cube to use; leave empty for the user's own cube (see list_cubes)."),
]
IdArg = Annotated[str, Field(description="The memory's id, as returned by search_memory or add_memory.")]


def build_server(mos: Any, resolve_user: ResolveUser, *, name: str = "memcube") -> MCPServer:
    """An ``MCPServer`` whose tools and resources act on ``mos`` as the user ``resolve_user`` names.

    Args:
        mos: the :class:`~memos_integrations.MOS` to serve.
        resolve_user: headers (None on stdio) -> user id; raises a MemosError for a missing or bad key.
        name: the server name clients show.

    Returns:
        The server; run it with ``.run("stdio")`` or serve it with :func:`mcp_http_app`.
    """
    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS)
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
    writes = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)

    async def call(ctx: Context, fn: Callable[..., Any], *args: Any, with_agent: bool = False, **kw: Any) -> Any:
        try:
            user, agent = await in_thread(_who, resolve_user, ctx.headers)  # the key store may wait for a lock
            with cache_scope.scoped(user):  # query vectors cached for this user only
                if with_agent:
                    return await in_thread(fn, user, agent, *args, **kw)
                return await in_thread(fn, user, *args, **kw)
        except MemosError as exc:
            raise ToolError(_message(exc)) from exc

    @server.tool(description=_D_ADD, annotations=writes)
    async def add_memory(
        text: Annotated[str, Field(description="The memory, one self-contained statement.", min_length=1)],
        ctx: Context,
        cube_id: CubeArg = None,
        session_id: Annotated[str | None, Field(description="The conversation it came from, if known.")] = None,
        tags: Annotated[list[str] | None, Field(description="Short labels, e.g. ['food', 'preference'].")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="Extra JSON fields to keep with it.")] = None,
    ) -> dict[str, Any]:
        def add(user: str, agent: str | None) -> dict[str, Any]:
            from .service import default_cube  # the same default cube the REST routes write to

            check_id(session_id, "session_id", MAX_NAME_CHARS)  # the REST body's bound (models.Id)
            target = check_id(cube_id, "cube_id", MAX_NAME_CHARS) or default_cube(mos, user, create=True)
            extra = {"agent_id": agent} if agent is not None else {}  # an agent's key writes under its agent

            def run() -> list[MemoryItem]:
                return mos.add(memory_content=text, mem_cube_id=target, user_id=user, session_id=session_id,
                               tags=list(tags or ()), metadata=dict(metadata or {}), **extra)

            items = _in_cube(mos, user, cube_id, run) if cube_id else run()  # the default cube is the user's own
            return {"memories": [_item(i) for i in items]}

        return dict(await call(ctx, add, with_agent=True))

    @server.tool(description=_D_SEARCH, annotations=read_only)
    async def search_memory(
        query: Annotated[str, Field(description="What to look for, in natural language.", min_length=1)],
        ctx: Context,
        k: Annotated[int, Field(description="How many memories to return.", ge=1, le=50)] = 5,
        cube_id: Annotated[str | None, Field(description="Search only this cube; empty searches every cube you can read.")] = None,
        session_id: Annotated[str | None, Field(description="Only memories from this conversation.")] = None,
        plan: Annotated[Literal["fast", "balanced", "deep", "multihop", "learned", "late"] | None, Field(
            description="How to search (default balanced): fast, balanced, deep, multihop, learned, or late "
                        "(learned plus token-level matching of the question's words).")] = None,
    ) -> dict[str, Any]:
        def search(user: str) -> dict[str, Any]:
            check_id(cube_id, "cube_id", MAX_NAME_CHARS)
            check_id(session_id, "session_id", MAX_NAME_CHARS)
            kw: dict[str, Any] = {"session_id": session_id} if session_id is not None else {}
            if plan is not None:
                kw["plan"] = plan

            def run() -> dict[str, Any]:
                with search_plan(plan):  # a late search embeds in fp32 (late_embed.py)
                    return mos.search(query, user_id=user, install_cube_ids=[cube_id] if cube_id else None, top_k=k, **kw)

            found = _in_cube(mos, user, cube_id, run) if cube_id else run()
            hits = [(g["cube_id"], h) for g in found["text_mem"] for h in g["memories"]]
            hits.sort(key=lambda pair: -pair[1].score)
            notes = _conflicts(mos, user, hits[:k])
            return {"memories": [{**_item(h.item), "cube_id": c, "score": round(h.score, 6),
                                  **({"conflicts": notes[(c, h.item.id)]} if (c, h.item.id) in notes else {})}
                                 for c, h in hits[:k]]}

        return dict(await call(ctx, search))

    @server.tool(description=_D_GET, annotations=read_only)
    async def get_memory(memory_id: IdArg, ctx: Context, cube_id: CubeArg = None) -> dict[str, Any]:
        def get(user: str) -> dict[str, Any]:
            found, item = _locate(mos, user, memory_id, cube_id)
            return {**_item(item), "cube_id": found}

        return dict(await call(ctx, get))

    @server.tool(description=_D_UPDATE, annotations=writes)
    async def update_memory(
        memory_id: IdArg,
        text: Annotated[str, Field(description="The corrected full text of the memory.", min_length=1)],
        ctx: Context,
        cube_id: CubeArg = None,
        tags: Annotated[list[str] | None, Field(description="New labels (replace the old ones).")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="New metadata (replaces the old).")] = None,
    ) -> dict[str, Any]:
        def update(user: str) -> dict[str, Any]:
            found, _ = _locate(mos, user, memory_id, cube_id)
            changes: dict[str, Any] = {"text": text}
            if tags is not None:
                changes["tags"] = list(tags)
            if metadata is not None:
                changes["metadata"] = dict(metadata)
            return {**_item(mos.update(found, memory_id, user_id=user, **changes)), "cube_id": found}

        return dict(await call(ctx, update))

    @server.tool(description=_D_FORGET, annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True))
    async def forget_memory(memory_id: IdArg, ctx: Context, cube_id: CubeArg = None) -> dict[str, Any]:
        def forget(user: str) -> dict[str, Any]:
            found, _ = _locate(mos, user, memory_id, cube_id)
            return {"forgotten": int(mos.delete(found, memory_id, user_id=user)), "cube_id": found}

        return dict(await call(ctx, forget))

    @server.tool(description=_D_HISTORY, annotations=read_only)
    async def memory_history(memory_id: IdArg, ctx: Context, cube_id: CubeArg = None) -> dict[str, Any]:
        def history(user: str) -> dict[str, Any]:
            return {"versions": _history(mos, user, memory_id, cube_id)}

        return dict(await call(ctx, history))

    @server.tool(description=_D_FEEDBACK, annotations=writes)
    async def give_feedback(
        text: Annotated[str, Field(description="What was wrong and what is true now.", min_length=1)],
        ctx: Context,
        cube_id: CubeArg = None,
        session_id: Annotated[str | None, Field(description="The conversation it is about, if known.")] = None,
    ) -> dict[str, Any]:
        def feedback(user: str) -> dict[str, Any]:
            check_id(cube_id, "cube_id", MAX_NAME_CHARS)
            check_id(session_id, "session_id", MAX_NAME_CHARS)
            handler = getattr(mos, "feedback", None)
            if handler is None:
                raise InvalidInputError(
                    "this memory service does not take feedback yet; correct the memory with update_memory "
                    "or remove it with forget_memory instead")

            def run() -> Any:
                return handler(text, user_id=user, mem_cube_id=cube_id, session_id=session_id)

            result = _in_cube(mos, user, cube_id, run) if cube_id else run()
            if isinstance(result, list) and all(isinstance(i, MemoryItem) for i in result):
                return {"memories": [_item(i) for i in result]}  # the memories the feedback changed
            return {"result": _jsonable(result)}

        return dict(await call(ctx, feedback))

    @server.tool(description=_D_CUBES, annotations=read_only)
    async def list_cubes(ctx: Context) -> dict[str, Any]:
        return dict(await call(ctx, lambda user: {"cubes": mos.list_cubes(user)}))

    async def read(ctx: Context, fn: Callable[[str], Any]) -> str:
        try:
            user, _agent = await in_thread(_who, resolve_user, ctx.headers)
            return json.dumps(_jsonable(await in_thread(fn, user)), ensure_ascii=False, indent=1)
        except MemosError as exc:
            raise ResourceError(_message(exc)) from exc

    @server.resource("memcube://cubes/{cube_id}/stats", name="cube-stats", mime_type="application/json",
                     description="Counts of a cube's memories by state and kind, versions, edges and users.")
    async def cube_stats(cube_id: str, ctx: Context) -> str:
        def stats(user: str) -> dict[str, Any]:
            check_id(cube_id, "cube_id", MAX_NAME_CHARS)
            out = dict(_in_cube(mos, user, cube_id, lambda: mos.cube(cube_id, user_id=user).stats()))
            out.pop("path", None)  # the server's file layout is not the client's business
            return out

        return await read(ctx, stats)

    @server.resource("memcube://cubes/{cube_id}/memories/{memory_id}/history", name="memory-history",
                     mime_type="application/json", description="Every version of one memory, oldest first.")
    async def memory_history_resource(cube_id: str, memory_id: str, ctx: Context) -> str:
        return await read(ctx, lambda user: {"versions": _history(mos, user, memory_id, cube_id)})

    return server


def _item(item: MemoryItem) -> dict[str, Any]:
    """What a model needs of a memory (not its provenance internals)."""
    return {
        "id": item.id, "text": item.text, "kind": item.kind.value, "state": item.state.value,
        "version": item.version, "session_id": item.session_id, "tags": list(item.tags),
        "metadata": _jsonable(item.metadata), "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
        "event_time": item.event_time.isoformat() if item.event_time else None,
    }


def _conflicts(mos: Any, user: str, hits: Sequence[tuple[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(cube id, memory id) -> the short texts of the memories a hit is flagged as contradicting (an organised
    cube's conflict links), one batch per cube, read through ``user``'s view of each cube (as
    ``POST /v1/faces/conflicts``): a note is only ever another live memory of the hit's own user."""
    from ..organize.links import conflict_notes

    by_cube: dict[str, list[MemoryItem]] = {}
    for cube_id, hit in hits:
        by_cube.setdefault(cube_id, []).append(hit.item)
    out: dict[tuple[str, str], list[str]] = {}
    for cube_id, items in by_cube.items():
        try:
            view = mos.cube(cube_id, user_id=user)
        except MemosError:  # a page never fails for want of its notes
            continue
        out.update({(cube_id, i): n for i, n in conflict_notes(view, items).items()})
    return out


def _history(mos: Any, user: str, memory_id: str, cube_id: str | None) -> list[dict[str, Any]]:
    _bounded(memory_id, cube_id)
    found = cube_id or _locate(mos, user, memory_id, None)[0]
    return [_item(v) for v in _in_cube(mos, user, found, lambda: mos.cube(found, user_id=user).history(memory_id))]


def _locate(mos: Any, user: str, memory_id: str, cube_id: str | None) -> tuple[str, MemoryItem]:
    """The cube holding ``memory_id`` (``cube_id``, else the first of the user's cubes that has it) and the item.

    Every lookup is ``MOS.get`` as ``user``, so MOS checks (and audits) access for each cube; a ``cube_id`` the
    user cannot reach is refused before that (:func:`_in_cube`), and without one only the user's own cubes are
    read, so another user's memory id answers as one that does not exist.
    """
    _bounded(memory_id, cube_id)
    if cube_id:
        return cube_id, _in_cube(mos, user, cube_id, lambda: mos.get(cube_id, memory_id, user_id=user))
    for entry in mos.list_cubes(user):
        try:
            return entry["cube_id"], mos.get(entry["cube_id"], memory_id, user_id=user)
        except ItemNotFoundError:
            continue
    raise ItemNotFoundError(f"no memory {memory_id!r} in the cubes you can read; find ids with search_memory")


def _in_cube(mos: Any, user: str, cube_id: str, call: Callable[[], T]) -> T:
    """``call`` on ``cube_id`` through :func:`.reach.guard`: a cube ``user`` cannot reach is refused from the
    registry, never opened, and audited in MOS's own log (the one log MCP has on stdio and over HTTP alike)."""
    return guard(mos, user, cube_id, call, audit=mos._audit)


def _bounded(memory_id: str, cube_id: str | None) -> None:
    """The REST routes' id bounds (:mod:`.ids`), before any cube is read."""
    check_id(memory_id, "memory_id")
    check_id(cube_id, "cube_id", MAX_NAME_CHARS)


def _message(exc: MemosError) -> str:
    """The text a client sees: the error class and what to do. A cube that does not exist, another user's cube
    and a cube the user reaches with too little access read alike, so no answer reveals whether another user's
    cube exists (the first two are audited in MOS's log by :func:`_in_cube`, the last by MOS in the cube)."""
    if isinstance(exc, (CubeNotFoundError, AccessDeniedError)):
        return ("AccessDeniedError: no such cube, or you may not do this there; list the cubes you can reach "
                "with list_cubes, or ask the cube's owner to share it")
    return f"{type(exc).__name__}: {exc}"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_stdio(mos: Any, user_id: str) -> None:
    """Serve MCP over stdin/stdout as ``user_id`` (checked first: an unknown user fails before any client connects)."""
    mos.list_cubes(user_id)
    build_server(mos, lambda _headers: user_id).run("stdio")


# -- streamable HTTP -------------------------------------------------------------------------------------

class McpHttpApp:
    """The streamable-HTTP MCP endpoint as one ASGI app: authenticates, then hands over to the SDK's app.

    The SDK's session manager must run inside a task group for the app's lifetime. Served on its own
    (``uvicorn.run(app)``) the ASGI lifespan does that; mounted in another app (Starlette/FastAPI do not
    forward lifespan to mounts), enter :meth:`lifespan` from the parent's lifespan; if neither happened,
    the first request starts it and it runs until the event loop ends.
    """

    def __init__(self, server: MCPServer, resolve_user: ResolveUser, *, allowed_hosts: Sequence[str] | None = None) -> None:
        self.server = server
        self.resolve_user = resolve_user
        if allowed_hosts is None:  # loopback only, with DNS-rebinding protection (the SDK's local default)
            security = TransportSecuritySettings(
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
        else:
            security = TransportSecuritySettings(enable_dns_rebinding_protection=bool(allowed_hosts),
                                                 allowed_hosts=list(allowed_hosts))
        # stateless + JSON: each POST is a whole exchange, so any worker can answer and no session state is kept
        self._app = server.streamable_http_app(streamable_http_path="/", stateless_http=True, json_response=True,
                                               transport_security=security)
        self._running = False
        self._start_lock = asyncio.Lock()
        self._holder: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run the SDK's session manager; the parent app enters this in its own lifespan."""
        async with self.server.session_manager.run():
            self._running = True
            try:
                yield
            finally:
                self._running = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._serve_lifespan(receive, send)
            return
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            try:
                # in a thread: checking a key reads and writes mos.db (audit, rate bucket), which can wait for
                # another process's write lock; on the event loop that wait stalled every other request
                await in_thread(self.resolve_user, headers)
            except MemosError as exc:  # any refusal of the key 401; an empty rate bucket 429, as the REST routes answer
                await _send_error(send, 429 if isinstance(exc, RateLimitedError) else 401, exc)
                return
            await self._ensure_running()
        await self._app(scope, receive, send)

    async def _ensure_running(self) -> None:
        if self._running:
            return
        async with self._start_lock:
            if self._running:
                return
            started = asyncio.Event()

            async def hold() -> None:
                async with self.lifespan():
                    started.set()
                    await asyncio.Event().wait()  # until the loop cancels it at shutdown

            self._holder = asyncio.get_running_loop().create_task(hold())
            await started.wait()

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        async with self.lifespan():
            await send({"type": "lifespan.startup.complete"})
            while (await receive())["type"] != "lifespan.shutdown":
                pass
        await send({"type": "lifespan.shutdown.complete"})


async def _send_error(send: Send, status: int, exc: MemosError) -> None:
    body = json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if getattr(exc, "retry_after", None) is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))  # type: ignore[attr-defined]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def mcp_http_app(mos: Any, resolve_user: ResolveUser, *, allowed_hosts: Sequence[str] | None = None,
                 check: ResolveUser | None = None) -> McpHttpApp:
    """The streamable-HTTP MCP endpoint over ``mos``; mount it at ``/mcp`` (``app.mount("/mcp", ...)``).

    Args:
        mos: the MOS to serve.
        resolve_user: request headers -> user id; raises a MemosError for a missing or bad key (answered 401
            with a JSON error before the MCP layer runs).
        allowed_hosts: ``Host`` header values to accept (``"example.com:*"``); None accepts loopback only
            (DNS-rebinding protection), an empty list turns the check off (behind a proxy that checks it).
        check: the once-per-HTTP-request check (default ``resolve_user``); the REST app passes one that also
            takes the key's rate token, so a tool call costs one token, not two.

    Returns:
        An ASGI app; see :class:`McpHttpApp` for how its lifespan runs when mounted.
    """
    return McpHttpApp(build_server(mos, resolve_user), check or resolve_user, allowed_hosts=allowed_hosts)
