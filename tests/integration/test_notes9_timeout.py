"""A face never waits a whole client timeout for conflict notes it can do without.

``RemoteCube.conflict_notes`` asks ``POST /v1/faces/conflicts`` for a page its own search did not answer.
A service (or a proxy) that accepts the connection and never answers made a face's context wait the
client's full ``timeout`` (30 s by default) before it answered without notes; the notes request now
has its own bound, ``RemoteCube.notes_timeout`` (5 s, never more than ``timeout``), and the context is
given without notes as before."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from memos_integrations.errors import BackendError
from memos_integrations.items import MemoryItem
from memos_integrations.organize.links import conflict_notes
from memos_integrations.remote import NOTES_TIMEOUT_S, RemoteCube


@pytest.fixture
def silent_url() -> Iterator[str]:
    """An HTTP address that accepts every connection and reads, but never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_notes_of_a_silent_service_give_up_after_notes_timeout_not_the_client_timeout(silent_url: str) -> None:
    remote = RemoteCube(silent_url, "a-key", cube_id="c", timeout=60)
    assert remote.notes_timeout == NOTES_TIMEOUT_S  # the bound, below the client's 60 s
    remote.notes_timeout = 0.3
    items = [MemoryItem(text="I live in Lisbon.", user_id="alice")]
    try:
        with pytest.raises(BackendError, match="timed out"):
            remote.conflict_notes(items)
        started = time.monotonic()
        assert conflict_notes(remote, items) == {}  # the face's lookup: no notes, never an error
        assert time.monotonic() - started < 10  # not the client's 60 s
    finally:
        remote.close()


def test_notes_timeout_is_never_longer_than_the_clients_timeout() -> None:
    remote = RemoteCube("http://127.0.0.1:9", "a-key", timeout=1.5)
    try:
        assert remote.notes_timeout == 1.5
    finally:
        remote.close()
