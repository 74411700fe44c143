"""Fixtures for the core's unit tests (the shared ones, ``embedder`` and ``cube``, are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def snapshot(cube: Any) -> tuple[Any, ...]:
    """Everything a user can observe about a cube's memories: stats, the full export, the outbox."""
    return (cube.stats(), list(cube.export_jsonl()), cube.store.outbox())


@pytest.fixture
def make_cube(tmp_path: Path, embedder: Any) -> Iterator[Callable[..., Any]]:
    """Build extra embedded cubes in this test's temporary directory: ``make_cube("name", config=...)``."""
    from memos_integrations import MemCube

    opened: list[Any] = []

    def make(name: str = "extra", config: Any = None, **kw: Any) -> Any:
        kw.setdefault("embedder", embedder)
        c = MemCube.init_from_dir(tmp_path / name, config, **kw)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()
