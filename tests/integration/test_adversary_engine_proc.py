"""The engine under attack where a real socket is needed: creating a server-backed cube when no
server answers. Bounded: connection refused on loopback is immediate."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.config import chroma_server
from memos_integrations.errors import MemosError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_creating_a_cube_on_an_unreachable_server_leaves_no_cube(tmp_path: Path, embedder: Any) -> None:
    path = tmp_path / "cube"
    port = _free_port()
    with pytest.raises(MemosError):
        MemCube.create(path, chroma_server("127.0.0.1", port), embedder=embedder)
    assert not (path / "cube.json").exists()  # was left behind: the folder then "already holds a cube"
    with pytest.raises(MemosError):  # a retry gets the same clear error, not "already holds a cube"
        MemCube.init_from_dir(path, chroma_server("127.0.0.1", port), embedder=embedder)
    MemCube.init_from_dir(path, embedder=embedder).close()  # and the folder can still become a cube


def test_cli_init_with_port_zero_is_refused_not_made_embedded(tmp_path: Path) -> None:
    from memos_integrations.cli import main

    assert main(["init", str(tmp_path / "cube"), "--chroma-host", "127.0.0.1", "--chroma-port", "0"]) == 2
    assert not (tmp_path / "cube" / "cube.json").exists()  # was an embedded cube, silently
