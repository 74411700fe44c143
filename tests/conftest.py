"""Shared fixtures. Unit tests run with sockets disabled; integration tests may use loopback only.

The real MiniLM embedder is loaded once per session (it is read-only) and shared by every cube.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if not path.is_relative_to(ROOT / "tests"):
            continue
        parts = path.relative_to(ROOT / "tests").parts
        if parts[0] == "integration":
            item.add_marker(pytest.mark.integration)
        elif parts[0] == "conformance":
            item.add_marker(pytest.mark.conformance)


@pytest.fixture(autouse=True)
def _no_network_in_unit_tests(request: pytest.FixtureRequest) -> object:
    """Unit tests may not open sockets at all; integration tests only to loopback."""
    import pytest_socket

    path = Path(str(request.node.fspath))
    parts = path.relative_to(ROOT / "tests").parts if path.is_relative_to(ROOT / "tests") else ("other",)
    if parts[0] == "unit":
        pytest_socket.disable_socket(allow_unix_socket=True)
    else:
        pytest_socket.socket_allow_hosts(["127.0.0.1", "localhost", "::1"], allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()
    pytest_socket._remove_restrictions() if hasattr(pytest_socket, "_remove_restrictions") else None


@pytest.fixture(scope="module")
def one_torch_thread():  # type: ignore[no-untyped-def]
    """One torch thread for a module's tiny models: thread hand-offs cost more than they save,
    badly so on a busy 2-core machine. Restored afterwards; torch is imported only when asked for."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    """The real offline MiniLM embedder, loaded once."""
    from memos_integrations.textual.embed import MiniLMEmbedder

    e = MiniLMEmbedder()
    _ = e.fingerprint  # load the weights now, not inside a timed or socket-restricted test
    return e


@pytest.fixture
def cube(tmp_path: Path, embedder):  # type: ignore[no-untyped-def]
    """A fresh embedded cube (SQLite + persistent Chroma + MiniLM) in a temporary directory."""
    from memos_integrations import MemCube

    c = MemCube.init_from_dir(tmp_path / "cube", embedder=embedder)
    yield c
    c.close()
