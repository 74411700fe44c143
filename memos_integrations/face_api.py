"""What a face may call on a cube: a typed protocol, and the one check every face constructor runs.

Faces (LangChain, LangGraph, LlamaIndex) type their cube as :class:`CubeAPI` instead of ``Any`` and pass
what they are given through :func:`as_cube`, so a wrong argument (a path string, a MOS, None) fails at
once with a clear error instead of an ``AttributeError`` deep inside a run.

Example:
    >>> as_cube("./my-cube", "MemOSVectorStore")
    Traceback (most recent call last):
    ...
    memos_integrations.errors.InvalidTypeError: MemOSVectorStore needs a MemCube, got str; open one first: MemCube.open('./my-cube') or MemCube.init_from_dir(...)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import InvalidTypeError


@runtime_checkable
class CubeAPI(Protocol):
    """The part of :class:`~memos_integrations.MemCube` the faces use."""

    path: Path
    cube_id: str
    store: Any
    text_mem: Any
    embedder: Any

    # Read-only callables, not method stubs: the cube's methods take many keyword arguments, and the
    # faces only need to know each exists and is called with keywords (mypy accepts a method here).
    @property
    def add(self) -> Callable[..., Any]: ...
    @property
    def add_items(self) -> Callable[..., Any]: ...
    @property
    def search(self) -> Callable[..., Any]: ...
    @property
    def get(self) -> Callable[..., Any]: ...
    @property
    def get_all(self) -> Callable[..., Any]: ...
    @property
    def update(self) -> Callable[..., Any]: ...
    @property
    def delete(self) -> Callable[..., Any]: ...
    @property
    def history(self) -> Callable[..., Any]: ...
    @property
    def audit(self) -> Callable[..., Any]: ...
    @property
    def feedback(self) -> Callable[..., Any]: ...


def as_cube(obj: Any, what: str) -> CubeAPI:
    """``obj`` if it is a cube (or a MOS-issued cube view), else a clear :class:`InvalidTypeError`."""
    if isinstance(obj, CubeAPI):
        return obj
    hint = (
        f"open one first: MemCube.open({str(obj)!r}) or MemCube.init_from_dir(...)"
        if isinstance(obj, (str, Path)) else "pass a MemCube (MemCube.open(path)) or mos.cube(cube_id, user_id=...)"
    )
    raise InvalidTypeError(f"{what} needs a MemCube, got {type(obj).__name__}; {hint}")
