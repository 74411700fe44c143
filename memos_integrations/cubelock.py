"""Advisory file locks: one process per embedded cube, one writer at a time into a vector index.

Why the cube lock: the embedded Chroma client keeps its HNSW index in the memory of the process that
opened it and writes it back from there, so two processes writing one ``<cube>/vectors`` directory
overwrite each other (ids that cannot be read back, vectors of deleted items that survive, a
``count()`` that hangs). An embedded cube is therefore held by one process at a time:
:class:`CubeHold` takes an exclusive ``flock`` on ``<cube>/cube.lock`` when the cube opens and drops
it on close. The kernel drops it too when the process dies (``kill -9`` included), so a crash never
leaves a stale lock; the PID written into the file only makes the refusal message useful. Within one
process the hold is shared and counted per resolved path: opening a cube twice there is fine (Chroma
shares one client per directory inside a process anyway). A child made by ``fork`` does not inherit
the hold; it must take its own and is refused while the parent holds it.

Why the index lock: the outbox (index writes committed in SQLite, not yet applied to the index) may
be drained by several threads, and by several processes when the vectors live on a Chroma server.
:class:`IndexWriteLock` (a thread lock plus ``flock`` on ``<cube>/index.lock``) makes one drain at a
time read the outbox, write the index and clear what it applied, so a drain never writes a version
older than one another drain already wrote.

POSIX only (``fcntl``); elsewhere both locks are held per process and the docs say so.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import CubeCorruptedError, CubeLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks between processes
    fcntl = None  # type: ignore[assignment]

CUBE_LOCK_FILE = "cube.lock"
INDEX_LOCK_FILE = "index.lock"


@dataclass
class _Held:
    fd: int
    count: int


_held: dict[str, _Held] = {}
#: holds on a lock file that was deleted or replaced while held (the cube folder was removed and
#: created again under the same path): kept until released, never shared with the new folder's hold
_replaced: list[_Held] = []
_registry = threading.Lock()
_fork_hook = False


def _after_fork_in_child() -> None:
    """A forked child starts holding nothing: the parent's holds stay the parent's."""
    global _registry
    _registry = threading.Lock()  # another thread may have held it at the fork
    for held in [*_held.values(), *_replaced]:
        os.close(held.fd)  # closes the child's copy only; the parent's flock stays
        held.fd = -1  # the child's CubeHold objects then have nothing to release
    _held.clear()
    _replaced.clear()


def _open_lock_file(path: Path) -> int:
    """A descriptor on the lock file ``path``, which must be a plain file inside the cube.

    The cube folder may come from anyone: a ``cube.lock`` that is a symbolic link would make the
    PID written into it truncate whatever file the link names, so links are never followed
    (``O_NOFOLLOW``) and anything but a regular file is refused.
    """
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:  # ELOOP: a link; EISDIR: a folder; EACCES ...
        raise CubeCorruptedError(
            f"{path} cannot be used as the cube's lock file ({exc.strerror or exc}); it must be a plain file: "
            "delete it (the cube recreates it) and open the cube again") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device put there by hand
        os.close(fd)
        raise CubeCorruptedError(f"{path} is not a plain file; delete it (the cube recreates it) and open the cube again")
    return fd


def _holder(fd: int) -> str:
    """Who holds the lock, from the PID its holder wrote (read through our descriptor, never a path)."""
    try:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one deleted, or replaced by a new folder)."""
    try:
        now, held = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


class CubeHold:
    """This process's hold on an embedded cube's directory; :meth:`release` once, on close."""

    def __init__(self, directory: Path) -> None:
        global _fork_hook
        self.key = str(directory.resolve())
        self.released = False
        with _registry:
            if not _fork_hook:
                os.register_at_fork(after_in_child=_after_fork_in_child)
                _fork_hook = True
            lock_file = Path(self.key) / CUBE_LOCK_FILE
            held = _held.get(self.key)
            if held is not None and _same_file(held.fd, lock_file):
                held.count += 1
                self._held = held
                return
            if held is not None:  # the folder was deleted and made again: its new lock file is not held yet
                _replaced.append(_held.pop(self.key))
            fd = _open_lock_file(lock_file)
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder(fd)
                    os.close(fd)
                    raise CubeLockedError(
                        f"cube {self.key} is open in {holder}: its embedded vector index can be written "
                        "by one process at a time. Close the cube in that process (or stop it), or keep the vectors "
                        "on a Chroma server (CubeConfig from memos_integrations.config.chroma_server(...)) so several "
                        "processes can share the cube, or put one service in front of the cube"
                    ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._held = _held[self.key] = _Held(fd, 1)

    def release(self) -> None:
        """Drop this hold (the file lock goes when the process's last hold on the path goes)."""
        with _registry:
            if self.released:
                return
            self.released = True
            held = self._held
            if held.fd < 0:  # forked child: nothing of its own to release
                return
            held.count -= 1
            if held.count == 0:
                if _held.get(self.key) is held:
                    del _held[self.key]
                else:
                    _replaced.remove(held)
                os.close(held.fd)  # closing the only descriptor releases the flock
                held.fd = -1


class IndexWriteLock:
    """Serialises draining the outbox into the vector index: threads here, processes via ``flock``.

    Re-entrant within a thread (``reconcile`` drains inside its own hold). ``path`` None: threads only.
    """

    def __init__(self, path: Path | None = None, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self._thread = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread:
            if self._depth == 0 and self.path is not None and fcntl is not None:
                self._fd = self._acquire(self.path)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    os.close(self._fd)  # one descriptor per hold: a forked child never shares it
                    self._fd = None

    def _acquire(self, path: Path) -> int:
        # a fresh descriptor each time, so a forked child never shares an open hold with its parent
        fd = _open_lock_file(path)
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise CubeLockedError(
                        f"another process has been writing the vector index for {self.timeout:.0f} s ({path}); "
                        "the write is stored and queued, and is applied on the next write or open; "
                        "check for a process stuck talking to the Chroma server"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
