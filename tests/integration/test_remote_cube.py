"""``RemoteCube`` end to end over loopback HTTP.

Two servers: a minimal in-test stand-in implementing just the ``/v1`` routes RemoteCube calls (over a real
MOS, so the request/response mapping and the error mapping are proven on this branch), and the service's
own app (``memos_integrations.server.app.create_app``) when it is importable (skipped otherwise).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from memos_integrations import MOS  # noqa: E402
from memos_integrations.errors import (  # noqa: E402
    AccessDeniedError,
    BackendError,
    ConflictError,
    CubeNotFoundError,
    EmptyTextError,
    InvalidInputError,
    ItemNotFoundError,
    MemosError,
)
from memos_integrations.face_api import as_cube  # noqa: E402
from memos_integrations.items import MemoryItem  # noqa: E402
from memos_integrations.remote import RemoteCube  # noqa: E402
from tests.integration.conftest import free_port  # noqa: E402

KEYS = {"key-alice": "alice", "key-bob": "bob"}
STATUS = {"AccessDeniedError": 403, "ItemNotFoundError": 404, "CubeNotFoundError": 404, "ConflictError": 409}


def standin(mos: MOS) -> FastAPI:
    """Just the routes RemoteCube calls, as the contract with the REST app states them, over MOS views."""
    app = FastAPI()
    seen: list[dict[str, Any]] = []
    app.state.seen = seen

    @app.exception_handler(MemosError)
    async def memos_error(request: Request, exc: MemosError) -> JSONResponse:
        kind = type(exc).__name__
        return JSONResponse({"error": {"type": kind, "message": str(exc), "request_id": "rid-1"}},
                            status_code=STATUS.get(kind, 422))

    def view(request: Request, cube_id: str | None, need: Literal["read", "write"] = "read") -> Any:
        auth = request.headers.get("authorization", "")
        user = KEYS.get(auth.removeprefix("Bearer "))
        if user is None:
            raise AccessDeniedError("missing or unknown API key")
        return mos.cube(cube_id or f"{user}_cube", user_id=user, access=need)

    async def body(request: Request) -> dict[str, Any]:
        data: dict[str, Any] = await request.json()
        seen.append({"path": request.url.path, "method": request.method, "body": data,
                     "query": dict(request.query_params)})
        return data

    @app.post("/v1/memories", status_code=201)
    async def add(request: Request) -> dict[str, Any]:
        b = await body(request)
        v = view(request, b.pop("cube_id", None), "write")
        kw = {k: b[k] for k in ("session_id", "agent_id", "tags", "timestamp", "user_id") if k in b}
        if "messages" in b:
            items = v.add(messages=b["messages"], **kw)
        else:
            items = v.add(memory=b["text"], kind=b.get("kind", "fact"), metadata=b.get("metadata"), **kw)
        return {"items": [i.to_dict() for i in items]}

    @app.post("/v1/memories/search")
    async def search(request: Request) -> dict[str, Any]:
        b = await body(request)
        v = view(request, b.pop("cube_id", None))
        b.pop("user_id", None)
        b.pop("conflicts", None)  # the notes a RemoteCube asks with each search: this stand-in has no graph
        hits = v.search(b.pop("query"), top_k=b.pop("k", 10), now=b.pop("as_of", None), **b)
        return {"hits": [{"item": h.item.to_dict(), "score": h.score, "ranks": h.ranks} for h in hits]}

    @app.post("/v1/faces/search")  # a face's search: user_id filters to that user, as MemCube.search
    async def face_search(request: Request) -> dict[str, Any]:
        b = await body(request)
        v = view(request, b.pop("cube_id", None))
        b.pop("conflicts", None)  # the notes a RemoteCube asks with each search: this stand-in has no graph
        hits = v.search(b.pop("query"), top_k=b.pop("k", 10), now=b.pop("as_of", None), **b)
        return {"hits": [{"item": h.item.to_dict(), "score": h.score, "ranks": h.ranks} for h in hits]}

    @app.get("/v1/memories")
    async def listing(request: Request, limit: int = 50, cursor: str | None = None,
                      session_id: str | None = None, cube_id: str | None = None) -> dict[str, Any]:
        seen.append({"path": request.url.path, "method": "GET", "query": dict(request.query_params)})
        start = int(cursor or 0)
        items = view(request, cube_id).get_all(session_id=session_id, limit=limit + 1, offset=start)
        more = len(items) > limit
        return {"items": [i.to_dict() for i in items[:limit]], "next_cursor": str(start + limit) if more else None}

    @app.get("/v1/memories/{item_id}")
    async def get(request: Request, item_id: str, cube_id: str | None = None) -> dict[str, Any]:
        return dict(view(request, cube_id).get(item_id).to_dict())

    @app.patch("/v1/memories/{item_id}")
    async def patch(request: Request, item_id: str, cube_id: str | None = None) -> dict[str, Any]:
        b = await body(request)
        assert "cube_id" not in b  # per-item routes take it in the query, as the service does
        v = view(request, cube_id, "write")
        return dict(v.update(item_id, expected_version=b.pop("expected_version", None), **b).to_dict())

    @app.delete("/v1/memories/{item_id}")
    async def delete(request: Request, item_id: str, cube_id: str | None = None) -> dict[str, Any]:
        v = view(request, cube_id, "write")
        v.get(item_id)  # a missing id is a 404, as on the real service
        return {"deleted": v.delete(item_id)}

    @app.get("/v1/memories/{item_id}/history")
    async def history(request: Request, item_id: str, cube_id: str | None = None) -> dict[str, Any]:
        return {"versions": [i.to_dict() for i in view(request, cube_id).history(item_id)]}

    @app.get("/v1/stats")
    async def stats(request: Request, cube_id: str | None = None) -> dict[str, Any]:
        return dict(view(request, cube_id).stats())

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict[str, Any]:
        b = await body(request)
        # the service's shape: the memories the feedback wrote (a cube without a reader stores the text)
        items = view(request, b.pop("cube_id", None), "write").add(memory=b["text"], session_id=b.get("session_id"))
        return {"items": [i.to_dict() for i in items]}

    @app.get("/boom/v1/stats")
    async def boom() -> JSONResponse:  # a proxy's HTML error page: not the service's JSON
        return JSONResponse("<html>bad gateway</html>", status_code=502)

    return app


def serve(app: Any) -> Callable[[], None] | tuple[str, Callable[[], None]]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture
def standin_server(tmp_path: Path, embedder: Any) -> Iterator[tuple[str, MOS, FastAPI]]:
    mos = MOS(tmp_path / "home", embedder=embedder)
    mos.create_user("alice")
    mos.create_user("bob")
    mos.create_cube_for_user("alice_cube", owner_id="alice")
    mos.create_cube_for_user("bob_cube", owner_id="bob")
    app = standin(mos)
    url, stop = serve(app)  # type: ignore[misc]
    try:
        yield url, mos, app
    finally:
        stop()
        mos.close()


def test_requests_and_responses_map_both_ways(standin_server: tuple[str, MOS, FastAPI],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url, mos, app = standin_server
    with RemoteCube(url, "key-alice") as cube:
        assert as_cube(cube, "a face") is cube  # satisfies the faces' CubeAPI protocol
        [tea] = cube.add(memory="Alice's favourite tea is genmaicha.", kind="preference", tags=["tea"],
                         metadata={"source": "chat"}, session_id="s1")
        assert isinstance(tea, MemoryItem) and tea.kind.value == "preference" and tea.user_id == "alice"
        assert tea.metadata == {"source": "chat"} and tea.tags == ["tea"] and tea.created_at.tzinfo is not None
        said = cube.add(messages=[{"role": "user", "content": "I moved to Lisbon in May."}], session_id="s2",
                        timestamp="2024-05-02T10:00")
        assert said[0].event_time is not None and said[0].event_time.year == 2024
        more = cube.add(memory=["Alice plays cello.", "Alice runs on Sundays."], user_id="alice")
        assert len(more) == 2

        hits = cube.search("what tea does Alice like?", top_k=2, user_id="alice", plan="fast")
        assert hits[0].item.id == tea.id and hits[0].score > 0 and hits[0].ranks
        only = cube.search("where does Alice live?", session_id="s2", kinds=["message"], top_k=5)
        assert [h.item.id for h in only] == [said[0].id]
        assert cube.search("tea", tags=["tea"], top_k=5)[0].item.id == tea.id

        assert cube.get(tea.id) == mos.get("alice_cube", tea.id, user_id="alice")  # the same item, field for field
        updated = cube.update(tea.id, text="Alice's favourite tea is sencha.", expected_version=1)
        assert updated.version == 2 and updated.text.endswith("sencha.")
        with pytest.raises(ConflictError):
            cube.update(tea.id, text="stale write", expected_version=1)
        assert [v.text for v in cube.history(tea.id)] == ["Alice's favourite tea is genmaicha.",
                                                         "Alice's favourite tea is sencha."]

        monkeypatch.setattr("memos_integrations.remote.PAGE", 2)  # follow next_cursor across pages
        listed = cube.get_all()
        assert [i.id for i in listed] == [i.id for i in mos.get_all("alice_cube", user_id="alice")["text_mem"][0]["memories"]]
        assert len(listed) == 4 and [i.id for i in cube.get_all(limit=2, offset=1)] == [i.id for i in listed[1:3]]
        assert cube.stats()["items"] == 4
        fed = cube.feedback("The tea is sencha now.", session_id="s1", user_id="alice", principal="alice")
        assert [i.text for i in fed] == ["The tea is sencha now."] and fed.operations == []

        assert cube.delete(more[0].id) == 1
        with pytest.raises(ItemNotFoundError, match="rid-1"):  # the service's class, message and request id
            cube.get(more[0].id)
        sent = app.state.seen
        assert {"text": "Alice's favourite tea is genmaicha.", "kind": "preference", "tags": ["tea"],
                "metadata": {"source": "chat"}, "session_id": "s1"} in [s.get("body") for s in sent]
        assert any(s.get("query", {}).get("limit") == "2" for s in sent)


def test_errors_come_back_as_the_same_memos_error(standin_server: tuple[str, MOS, FastAPI]) -> None:
    url, mos, _ = standin_server
    [bobs] = mos.add(memory_content="Bob's spare key is under the fern.", mem_cube_id="bob_cube", user_id="bob")
    with RemoteCube(url, "key-alice", cube_id="bob_cube") as theirs:
        with pytest.raises(AccessDeniedError) as denied:  # also a PermissionError, as locally
            theirs.get(bobs.id)
        assert isinstance(denied.value, PermissionError)
        with pytest.raises(AccessDeniedError):
            theirs.search("key")
    with RemoteCube(url, "key-nobody") as stranger, pytest.raises(AccessDeniedError, match="API key"):
        stranger.stats()
    with RemoteCube(url, "key-alice") as cube:
        with pytest.raises(EmptyTextError):  # the subclass, not just InvalidInputError
            cube.add(memory="   ")
        with pytest.raises(ItemNotFoundError):
            cube.history("no-such-id")
        with pytest.raises(ItemNotFoundError):  # an id with path tricks stays one path segment
            cube.get("../stats")
        for call in (lambda: cube.search("q", filter=object()), lambda: cube.search("q", query_vector=[0.1]),
                     lambda: cube.add_items([]), lambda: cube.update("x", state="archived"),
                     lambda: cube.add(memory="x", sources=["a"]), lambda: cube.get_all(kinds=["fact"])):
            with pytest.raises(InvalidInputError, match="RemoteCube"):
                call()
    with RemoteCube(url + "/boom", "key-alice") as proxy, pytest.raises(BackendError, match="502"):
        proxy.stats()  # a non-JSON 5xx is a BackendError with the status
    with RemoteCube(f"http://127.0.0.1:{free_port()}", "key-alice", timeout=2) as gone:
        with pytest.raises(BackendError, match="memcube serve"):
            gone.stats()
    for bad in (("ftp://x", "k"), (url, ""), (url, None)):
        with pytest.raises(InvalidInputError):
            RemoteCube(*bad)  # type: ignore[arg-type]


def test_faces_run_on_a_remote_cube(standin_server: tuple[str, MOS, FastAPI]) -> None:
    """The faces whose cube calls fit these routes: the LangChain retriever and the LlamaIndex memory block
    (the LlamaIndex retriever passes a MemoryFilter and a query vector, which RemoteCube refuses)."""
    pytest.importorskip("langchain_core")
    from memos_integrations.langchain import MemOSRetriever

    url, _, _ = standin_server
    with RemoteCube(url, "key-alice") as cube:
        cube.add(memory="Alice adopted a cat called Miso.")
        docs = MemOSRetriever(cube=cube, user_id="alice", k=2).invoke("what is the cat called?")
        assert docs and "Miso" in docs[0].page_content
        pytest.importorskip("llama_index.core")
        from llama_index.core.base.llms.types import ChatMessage

        from memos_integrations.llama_index.memory_block import MemOSMemoryBlock

        block = MemOSMemoryBlock.from_defaults(cube, user_id="alice")
        asyncio.run(block.aput([ChatMessage(role="user", content="My sister Maya lives in Oslo.")]))
        assert "Oslo" in asyncio.run(block.aget([ChatMessage(role="user", content="Where does Maya live?")]))
        assert any("Oslo" in i.text for i in cube.get_all())


def test_against_the_service_app(tmp_path: Path, embedder: Any) -> None:
    """The same calls against the real REST app, when the ``server`` branch's app is on this tree."""
    try:
        from memos_integrations.server.app import create_app
        from memos_integrations.storage.keys import KeyStore  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        pytest.skip(f"memos_integrations.server.app is not on this branch yet ({exc}); the stand-in test covers the mapping")
    mos = MOS(tmp_path / "home", embedder=embedder)
    mos.create_user("alice")
    mos.create_user("bob")
    mos.create_cube_for_user("alice_cube", owner_id="alice")
    mos.create_cube_for_user("bob_cube", owner_id="bob")
    keys = KeyStore.open(mos.home)
    alice_key, _ = keys.create("alice")
    bob_key, _ = keys.create("bob")
    url, stop = serve(create_app(mos, keys=keys, mcp=False))  # type: ignore[misc]
    try:
        with RemoteCube(url, alice_key, cube_id="alice_cube") as cube:
            [tea] = cube.add(memory="Alice's favourite tea is genmaicha.", tags=["tea"])
            assert cube.search("what tea?", top_k=1)[0].item.id == tea.id
            assert cube.get(tea.id).text == tea.text
            assert cube.update(tea.id, text="Alice's favourite tea is sencha.").version == 2
            assert [v.version for v in cube.history(tea.id)] == [1, 2]
            assert [i.id for i in cube.get_all()] == [tea.id]
            assert cube.stats()["items"] == 1
            assert cube.delete(tea.id) == 1
            with pytest.raises(ItemNotFoundError):
                cube.get(tea.id)
        with RemoteCube(url, bob_key, cube_id="alice_cube") as theirs, pytest.raises(CubeNotFoundError):
            theirs.search("tea")  # the service does not reveal that another user's cube exists
        with RemoteCube(url, "not-a-key") as stranger, pytest.raises(AccessDeniedError) as refused:
            stranger.stats()
        assert type(refused.value).__name__ == "AuthenticationError"  # the service's own class, mapped back
    finally:
        stop()
        keys_close = getattr(keys, "close", None)
        if callable(keys_close):
            keys_close()
        mos.close()
