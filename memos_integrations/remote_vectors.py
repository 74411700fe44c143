"""The client side of the vector-store faces on a :class:`~memos_integrations.remote.RemoteCube`.

Where it sits: ``MemOSVectorStore(cube=RemoteCube(...))`` (LangChain or LlamaIndex) is that face's remote
subclass (``RemoteVectorStore`` in each face module, picked by the face's ``__new__`` as ``Path()`` picks
``PosixPath``); it forwards each operation to ``/v1/vector-stores/...``, where the service runs the same
face for the key's user (:mod:`memos_integrations.server.routes_vectors`). This module holds what both
remote stores share:

- :class:`RemoteEmbedder`: the cube's embedder seen from the client. Its identity (name, dimension,
  fingerprint) comes from the service, so the faces' embedding checks (a model with another fingerprint
  is an :class:`EmbedderMismatchError`) run unchanged; it embeds by asking the service.
- :func:`post`: one request, its JSON written strictly (NaN or infinity is an ``InvalidInputError`` here,
  never sent) and checked against the service's body limit before it leaves.
- :func:`post_rows`: a write is sent as the parts of one staged write, each under the limit (one part when
  it fits); the service writes them all when the last arrives, so a failure in any request writes nothing,
  and a last request sent again after a lost answer gets the write's answer back, never a second write.

Sync/async: synchronous, like ``RemoteCube``; the faces' async methods run it in a worker thread.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import (
    BackendError,
    ConflictError,
    EmbedderMismatchError,
    InvalidInputError,
    MemosError,
    OversizedInputError,
)

if TYPE_CHECKING:
    from .remote import RemoteCube

#: bytes kept free under the service's body limit for what :func:`post` adds (the cube id, brackets)
_SLACK = 1024


class RemoteEmbedder:
    """The remote cube's embedder: its identity from ``GET /v1/vector-stores/embedder``, embeddings by ``POST .../embed``."""

    def __init__(self, cube: RemoteCube) -> None:
        self._cube = cube
        self._info: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        """``{"name", "dimension", "fingerprint", "max_text_chars", "max_body_bytes", "max_k"}`` (asked once, then kept)."""
        if self._info is None:
            data = self._cube._call("GET", "/v1/vector-stores/embedder")
            if not (isinstance(data, dict) and isinstance(data.get("dimension"), int)
                    and isinstance(data.get("fingerprint"), str) and isinstance(data.get("max_body_bytes"), int)):
                raise BackendError(f"GET /v1/vector-stores/embedder answered {str(data)[:200]}; check the service's version")
            self._info = data
        return self._info

    @property
    def name(self) -> str:
        return str(self.info().get("name"))

    @property
    def dimension(self) -> int:
        return int(self.info()["dimension"])

    @property
    def fingerprint(self) -> str:
        return str(self.info()["fingerprint"])

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        data = self._cube._call("POST", "/v1/vector-stores/embed", json={"texts": texts})
        return np.asarray(data.get("vectors"), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        data = self._cube._call("POST", "/v1/vector-stores/embed", json={"texts": [text], "query": True})
        return np.asarray(data.get("vectors"), dtype=np.float32)[0]

    def __repr__(self) -> str:
        return f"RemoteEmbedder({self._cube!r})"


def service_info(cube: RemoteCube) -> dict[str, Any]:
    """The service's embedder identity and limits for ``cube`` (through its RemoteEmbedder, or a fresh one)."""
    emb = cube.embedder if isinstance(cube.embedder, RemoteEmbedder) else RemoteEmbedder(cube)
    return emb.info()


def check_embedder(cube: RemoteCube) -> None:
    """A RemoteCube given a client-side embedder: refuse it unless it is the service cube's own model."""
    given = cube.embedder
    if given is None or isinstance(given, RemoteEmbedder):
        return
    info = service_info(cube)
    if getattr(given, "fingerprint", None) != info["fingerprint"]:
        raise EmbedderMismatchError(
            f"the RemoteCube's embedder {getattr(given, 'name', type(given).__name__)!r} is not the model cube "
            f"{cube.cube_id or '(default)'!r} was built with ({info['name']!r}, fingerprint {info['fingerprint']}); "
            "leave embedder= unset to embed on the service")


def encode(body: Any) -> bytes:
    """JSON for the wire; NaN and infinity are refused here (JSON has no such numbers)."""
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except ValueError as exc:
        raise InvalidInputError(f"a value holds NaN or infinity ({exc}); vectors and metadata must be finite numbers") from None
    except TypeError as exc:
        raise InvalidInputError(f"a value cannot be sent as JSON ({exc}); use strings, numbers, lists and dicts") from None


def post(cube: RemoteCube, route: str, body: dict[str, Any]) -> Any:
    """``POST route`` with ``body`` (the cube id added), refused here if over the service's body limit."""
    import httpx

    from .remote import _error_from

    if cube._cube_param:
        body = {**body, "cube_id": cube._cube_param}
    content = encode(body)
    limit = service_info(cube)["max_body_bytes"]
    if len(content) > limit:
        raise OversizedInputError(f"this request is {len(content)} bytes, over the service's body limit of {limit}; "
                                  "send fewer or smaller items per call")
    try:
        response = cube._http.request("POST", cube.base_url + route, content=content,
                                      headers={**cube._headers, "Content-Type": "application/json"})
    except httpx.TimeoutException as exc:
        raise BackendError(f"POST {route} on {cube.base_url} timed out ({exc}); retry, or raise timeout=") from exc
    except httpx.TransportError as exc:
        raise BackendError(f"cannot reach the memory service at {cube.base_url} ({exc}); is `memcube serve` running?") from exc
    if response.status_code >= 400:
        raise _error_from(response, f"POST {route}")
    try:
        return response.json()
    except ValueError as exc:
        raise BackendError(f"POST {route} answered {response.status_code} with a body that is not JSON") from exc


def batches(common: dict[str, Any], columns: dict[str, list[Any] | None], limit: int) -> list[tuple[dict[str, Any], int]]:
    """Split parallel ``columns`` (rows by index; None columns stay None) into bodies of at most ``limit`` bytes.

    Raises:
        OversizedInputError: one row alone is over the limit.
    """
    n = max((len(c) for c in columns.values() if c is not None), default=0)
    room = limit - len(encode({**common, **{k: [] if v is not None else None for k, v in columns.items()}})) - _SLACK
    out: list[tuple[dict[str, Any], int]] = []
    start, size = 0, 0
    for i in range(n):
        row = sum(len(encode(c[i])) + 1 for c in columns.values() if c is not None)
        if row > room:
            raise OversizedInputError(f"item {i} alone is {row} bytes, over the service's body limit of {limit}; "
                                      "split it into smaller pieces")
        if size + row > room and i > start:
            out.append(_slice(common, columns, start, i))
            start, size = i, 0
        size += row
    if n:
        out.append(_slice(common, columns, start, n))
    return out


def post_rows(cube: RemoteCube, route: str, common: dict[str, Any], columns: dict[str, list[Any] | None],
              merge: Callable[[list[Any]], Any], *, before: Callable[[], None] | None = None) -> Any:
    """Write rows in as few requests as the body limit allows, all or nothing; ``before`` runs first when it
    takes more than one.

    Every write is one *staged* write: each request carries the write's random ``stage`` id and its
    ``part``; the service keeps every part but the last, and the last (which names ``parts``) writes them
    all in one transaction. So a failure in any request writes nothing (the kept parts are released at
    once by :func:`abort_stage`, or by the service's idle rule), and the write can simply be sent again.
    The service remembers a written write's answer for its stage (10 minutes, then 24 h in the cube), so when the connection fails on the last request (the service may have committed), that
    request is sent once more: the service answers the write's own answer if it was written, or writes it
    now, never twice. ``before`` (the face's own checks of the whole write, run on this side) refuses
    early what the service would refuse at the end.
    """
    bodies = batches(common, columns, service_info(cube)["max_body_bytes"])
    if not bodies:
        return merge([])
    if before is not None and len(bodies) > 1:
        before()
    stage = secrets.token_urlsafe(16)
    last, answer = len(bodies) - 1, None
    split = (f"the write was sent in {len(bodies)} requests to fit the service's body limit; "
             if len(bodies) > 1 else "")
    for part, (body, _count) in enumerate(bodies):
        body = {**body, "stage": stage, "part": part, **({"parts": len(bodies)} if part == last else {})}
        resent = False
        try:
            try:
                answer = post(cube, route, body)
            except BackendError as exc:
                if part != last or exc.__cause__ is None:
                    raise
                resent = True  # the answer was lost: the service answers it again, or writes it now
                answer = post(cube, route, body)
        except MemosError as exc:
            unsure = resent and (isinstance(exc, ConflictError) or (isinstance(exc, BackendError) and exc.__cause__ is not None))
            if unsure:
                raise type(exc)(f"{exc} ({split}the last request failed, and again when it was sent again, so the "
                                "service may or may not have written the write: read it back before sending it "
                                "again)") from exc
            if len(bodies) == 1:  # one request: the service's own error, as it is
                raise
            abort_stage(cube, stage)
            raise type(exc)(f"{exc} ({split}request {part + 1} failed and nothing was written: send the whole "
                            "write again)") from exc
    return merge([answer])


def abort_stage(cube: RemoteCube, stage: str) -> None:
    """Tell the service to release a split write's staged parts now (``DELETE .../stages/{stage}``), so a
    failed write stops counting against the key's staging bounds at once. Best effort: when the service
    cannot be reached, its idle rule releases them 2 minutes after the last part anyway."""
    try:
        cube._call("DELETE", f"/v1/vector-stores/stages/{stage}")
    except MemosError:
        pass  # released by the service's idle rule; the write's own error is what the caller needs


def _slice(common: dict[str, Any], columns: dict[str, list[Any] | None], a: int, b: int) -> tuple[dict[str, Any], int]:
    return {**common, **{k: (v[a:b] if v is not None else None) for k, v in columns.items()}}, b - a


#: the MemoryFilter fields the search route has a field for, as (filter field, route field)
_SEARCH_FIELDS = (("user_id", "user_id"), ("agent_id", "agent_id"), ("session_id", "session_id"), ("kinds", "kinds"),
                  ("tags_all", "tags"), ("metadata", "metadata"), ("time_from", "time_from"), ("time_to", "time_to"),
                  ("as_of", "as_of"))
#: fields the route cannot express; ``current`` is left out: the route always answers the current truth
_NO_ROUTE_FIELD = ("states", "tags_any", "ids", "parent_id", "parent_prefix")


def search_fields(flt: Any) -> dict[str, Any]:
    """``RemoteCube.search(filter=...)``: a MemoryFilter as the search route's fields (as ``MemCube.search``,
    the filter replaces the scope and field arguments). A one-element id list is that id.

    Raises:
        InvalidInputError: the filter sets a field the route has none for (several users, ``ids``, ...).
    """
    from .textual.filters import MemoryFilter

    if not isinstance(flt, MemoryFilter):
        raise InvalidInputError(f"RemoteCube.search takes a MemoryFilter as filter, got {type(flt).__name__}")
    default = MemoryFilter()
    refused = [name for name in _NO_ROUTE_FIELD if getattr(flt, name) != getattr(default, name)]
    out: dict[str, Any] = {}
    for name, route in _SEARCH_FIELDS:
        value = getattr(flt, name)
        if name in ("user_id", "agent_id", "session_id") and isinstance(value, (list, tuple)):
            if len(value) != 1:
                refused.append(f"{name} (a list)")
                continue
            value = value[0]
        out[route] = list(value) if name in ("kinds", "tags_all") and value is not None else value
    if refused:
        raise InvalidInputError(f"RemoteCube.search cannot send a filter on {refused}: the REST API has no field for "
                                "them; filter by one user, agent or session, kinds, tags and metadata, or use a local MemCube")
    return out


def check_unique(ids: Sequence[Any]) -> None:
    """The engine's refusal of one id twice in a write, for a write sent as several requests."""
    seen: set[Any] = set()
    for i in ids:
        if i in seen:
            raise InvalidInputError(f"id {i!r} appears twice in one write; ids must be unique")
        seen.add(i)
