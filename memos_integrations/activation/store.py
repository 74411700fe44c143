"""The on-disk half of activation memory: KV caches in ``<cube>/kv`` as safetensors plus a JSON index.

Part of activation memory (``activation/``). The in-memory manager spills least-recently-used
caches here and reloads them on a later turn or in a new process. Nothing is pickled: each entry is
one ``.safetensors`` file (tensors ``k.<layer>``/``v.<layer>``, with the model key, thread id and
dtype repeated in its header) and one row of ``index.json`` naming the model key, dtype, layer count
and the exact token ids the cache covers, plus a CRC32 of the file so a damaged file is detected
before its tensors are used. Writes go to a temporary file and are renamed into place, so a crash
leaves either the old entry or the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CubeCorruptedError, ModelMismatchError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
INDEX_NAME = "index.json"


@dataclass
class IndexEntry:
    """One spilled cache, as recorded in ``index.json``."""

    model_key: str
    thread_id: str
    file: str
    dtype: str
    num_layers: int
    token_ids: list[int]
    crc32: int
    nbytes: int
    created_at: float
    meta: dict[str, Any] = field(default_factory=dict)


def entry_name(model_key: str, thread_id: str) -> str:
    """File stem for an entry: a hash, so thread ids never become path components."""
    return hashlib.sha256(f"{model_key}\0{thread_id}".encode()).hexdigest()[:32]


def _parse_entry(name: Any, row: Any) -> IndexEntry:
    """One ``index.json`` row, checked: right types, and the file it names is exactly its own.

    The file name is derived from the model key and thread id (:func:`entry_name`), so a row that
    names anything else (``../memory.db``, an absolute path, another entry's file) was edited.
    """
    if not isinstance(row, dict):
        raise TypeError(f"a row is an object, got {type(row).__name__}")
    entry = IndexEntry(**row)
    for attr, kind in (("model_key", str), ("thread_id", str), ("file", str), ("dtype", str),
                       ("num_layers", int), ("crc32", int), ("nbytes", int), ("created_at", (int, float)),
                       ("token_ids", list), ("meta", dict)):
        value = getattr(entry, attr)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"{attr} has the wrong type ({type(value).__name__})")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in entry.token_ids):
        raise TypeError("token_ids must be integers")
    expected = entry_name(entry.model_key, entry.thread_id)
    if name != expected or entry.file != f"{expected}.safetensors":
        raise ValueError(f"it names the file {entry.file[:80]!r}, not its own {expected}.safetensors")
    return entry


class KVDiskStore:
    """Reads and writes spilled caches under one directory; safe to share between threads."""

    def __init__(self, directory: str | Path, max_bytes: int | None = None) -> None:
        self.directory = Path(directory)
        #: when set, the oldest spilled caches are deleted once the files exceed it (they are derived
        #: data: a thread whose cache is gone recomputes on its next turn)
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._index: dict[str, IndexEntry] = {}
        self._index_mtime: float | None = None

    # -- index -----------------------------------------------------------------------------------
    def _index_path(self) -> Path:
        return self.directory / INDEX_NAME

    def _refresh(self) -> None:
        """Re-read the index when another process (or an earlier run) changed it."""
        path = self._index_path()
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            self._index, self._index_mtime = {}, None
            return
        if mtime == self._index_mtime:
            return
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or not isinstance(raw.get("entries"), dict):
                raise ValueError(f"expected an object with 'format' and 'entries', got {type(raw).__name__}")
            if raw.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {raw.get('format')!r}")
        except (ValueError, OSError, RecursionError) as exc:
            raise CubeCorruptedError(
                f"KV index {path} is unreadable ({str(exc)[:200]}); delete the kv/ directory to start with no "
                "cached caches (they are derived data and will be recomputed)") from exc
        index: dict[str, IndexEntry] = {}
        for name, row in raw["entries"].items():
            try:
                index[name] = _parse_entry(name, row)
            except (ValueError, TypeError) as exc:
                # a row that names another file, or is malformed, is not trusted: it is left out
                # (a lookup recomputes) and never read or deleted
                log.warning("KV index %s: entry %r ignored: %s", path, str(name)[:80], exc)
        self._index = index
        self._index_mtime = mtime

    def _write_index(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        body = {"format": FORMAT_VERSION, "entries": {n: asdict(e) for n, e in self._index.items()}}
        tmp = self._index_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self._index_path())
        self._index_mtime = self._index_path().stat().st_mtime_ns

    def entries(self) -> list[IndexEntry]:
        """All spilled entries (any model)."""
        with self._lock:
            self._refresh()
            return list(self._index.values())

    def find(self, model_key: str, thread_id: str) -> IndexEntry | None:
        """The index row for this model and thread, or ``None`` (reads no tensors)."""
        with self._lock:
            self._refresh()
            return self._index.get(entry_name(model_key, thread_id))

    def threads_for_other_models(self, model_key: str, thread_id: str) -> list[str]:
        """Model keys that hold a cache for ``thread_id`` other than ``model_key``."""
        with self._lock:
            self._refresh()
            return [e.model_key for e in self._index.values()
                    if e.thread_id == thread_id and e.model_key != model_key]

    # -- entries ---------------------------------------------------------------------------------
    def write(self, model_key: str, thread_id: str, token_ids: list[int], tensors: dict[str, Any],
              dtype: str, meta: dict[str, Any] | None = None) -> IndexEntry:
        """Write one cache (the output of :func:`.kv.to_tensors`) and record it in the index."""
        from safetensors.torch import save

        header = {"memos.model_key": model_key, "memos.thread_id": thread_id, "memos.dtype": dtype,
                  "memos.seq_len": str(len(token_ids)), "memos.format": str(FORMAT_VERSION)}
        data = save(tensors, metadata=header)
        name = entry_name(model_key, thread_id)
        entry = IndexEntry(model_key=model_key, thread_id=thread_id, file=f"{name}.safetensors",
                           dtype=dtype, num_layers=len(tensors) // 2, token_ids=list(token_ids),
                           crc32=zlib.crc32(data), nbytes=len(data), created_at=time.time(),
                           meta=dict(meta or {}))
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f"{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.directory / entry.file)
            try:
                self._refresh()
            except CubeCorruptedError as exc:  # derived data: a damaged index is replaced, not fatal
                log.warning("%s; starting a new KV index", exc)
                self._index = {}
            self._index[name] = entry
            self._trim(keep=name)
            self._write_index()
        return entry

    def _trim(self, keep: str) -> None:
        """Delete the oldest entries (never ``keep``) while the files exceed ``max_bytes``."""
        if self.max_bytes is None:
            return
        total = sum(e.nbytes for e in self._index.values())
        for name, old in sorted(self._index.items(), key=lambda kv: kv[1].created_at):
            if total <= self.max_bytes:
                break
            if name == keep:
                continue
            self._unlink(old)
            del self._index[name]
            total -= old.nbytes

    def _file(self, entry: IndexEntry) -> Path:
        """The entry's file, resolved; it must be a file directly inside this directory."""
        base = self.directory.resolve()
        path = (self.directory / entry.file).resolve()
        if path.parent != base:
            raise CubeCorruptedError(
                f"KV index entry for thread {entry.thread_id!r} points outside {self.directory} "
                f"({entry.file!r}); it is ignored")
        return path

    def read(self, entry: IndexEntry, *, model_key: str, dtype: str) -> dict[str, Any]:
        """Load an entry's tensors after checking its model, dtype and checksum.

        Raises :class:`ModelMismatchError` for a cache made by another model or dtype and
        :class:`CubeCorruptedError` for a damaged or tampered file.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load

        if entry.model_key != model_key:
            raise ModelMismatchError(
                f"KV cache for thread {entry.thread_id!r} was made by model {entry.model_key}, not "
                f"{model_key}; it is refused (a new turn recomputes with this model)")
        if entry.dtype != dtype:
            raise ModelMismatchError(
                f"KV cache for thread {entry.thread_id!r} is {entry.dtype} but the model runs in {dtype}")
        path = self._file(entry)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise CubeCorruptedError(f"KV cache file {path} is missing; drop the entry") from exc
        except OSError as exc:  # a directory, a FIFO, unreadable
            raise CubeCorruptedError(f"KV cache file {path} cannot be read ({exc}); drop the entry") from exc
        if zlib.crc32(data) != entry.crc32:
            raise CubeCorruptedError(
                f"KV cache file {path} fails its checksum (damaged or edited); it is dropped and the "
                "turn recomputes")
        try:
            tensors = load(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:  # pragma: no cover - crc catches first
            raise CubeCorruptedError(f"KV cache file {path} is not valid safetensors: {exc}") from exc
        return tensors

    def header(self, entry: IndexEntry) -> dict[str, str]:
        """The metadata stored in the safetensors header of an entry (for audits and tests)."""
        from safetensors import safe_open

        with safe_open(str(self._file(entry)), framework="pt") as f:
            return dict(f.metadata() or {})

    def delete(self, model_key: str, thread_id: str) -> bool:
        """Remove an entry and its file; ``True`` when there was one."""
        name = entry_name(model_key, thread_id)
        with self._lock:
            self._refresh()
            entry = self._index.pop(name, None)
            if entry is None:
                return False
            self._unlink(entry)
            self._write_index()
            return True

    def _unlink(self, entry: IndexEntry) -> None:
        """Delete an entry's file: only ever a file directly in this directory (a link, not its target)."""
        path = self.directory / entry.file
        if path.parent.resolve() != self.directory.resolve() or Path(entry.file).name != entry.file:
            log.warning("KV entry %r names %r outside %s; not deleted", entry.thread_id, entry.file, self.directory)
            return
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
