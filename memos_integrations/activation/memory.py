"""ActivationMemory: per-thread KV caches for a local transformers model (the cube's ``act_mem`` slot).

Where it sits: a cube owns one ``ActivationMemory`` (``cube.act_mem``, created by
:meth:`ActivationMemory.for_cube`); the local runtime (:mod:`memos_integrations.models.runtime`)
asks it for a cache before every turn and hands the grown cache back afterwards. Caches live in RAM
under a byte budget and spill to ``<cube>/kv`` (see :mod:`.store`) when evicted.

The contract:

* Caches are keyed by ``(model_key, thread_id)``; ``model_key`` is the model fingerprint (plus the
  active adapter's digest, since LoRA on attention changes keys and values).
* :meth:`lookup` returns a *fork* covering the longest token prefix shared with the new prompt,
  always leaving at least one prompt token uncached (a model needs one input position to produce
  logits). Reuse is decided by exact token identity, so an edited history simply reuses less.
* A stored cache is never handed to a forward pass; :meth:`store` takes ownership of the cache the
  caller grew, and later forks share its tensors read-only (see :mod:`.kv`).
* Shared prefixes (:meth:`set_prefix`): the system prompt plus pinned memories, prefilled once and
  forked into every thread whose prompt starts with them; setting new tokens for a name invalidates
  the old prefix.
* Least-recently-used entries beyond ``budget_bytes`` are spilled to disk (or dropped when there is
  no directory); a cache alone larger than the budget goes straight to disk.
* Bad caches never give wrong answers: a foreign, corrupt or mismatched cache found during a lookup
  is dropped and reported as a miss with a reason (the turn recomputes); the strict :meth:`load`
  raises instead.

Sync only, and thread-safe (one lock); the LangChain face calls it from worker threads.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CubeCorruptedError, InvalidInputError, ItemNotFoundError, ModelMismatchError
from ..models.fingerprint import model_dtype, model_fingerprint
from . import kv
from .store import KVDiskStore

log = logging.getLogger(__name__)

PREFIX_THREAD = "__prefix__/"
PRELOAD_THREAD = "__preload__/"  # a thread's next-turn cache, prefilled in the background (see .preload)
DEFAULT_BUDGET_BYTES = 512 * 1024 * 1024


@dataclass
class _Entry:
    model_key: str
    thread_id: str
    token_ids: tuple[int, ...]
    cache: Any
    nbytes: int
    dtype: str
    meta: dict[str, Any] = field(default_factory=dict)
    on_disk: bool = False  # the disk copy is identical, so spilling needs no write


@dataclass(frozen=True)
class CacheLease:
    """The result of :meth:`ActivationMemory.lookup`.

    ``cache`` is a fresh fork the caller may pass to a forward pass (``None`` on a miss);
    ``reused_tokens`` prompt tokens are already in it; ``source`` is ``"memory"``, ``"disk"``,
    ``"prefix"`` or ``"miss"``; ``reason`` explains a miss that found something unusable.
    """

    cache: Any
    reused_tokens: int
    source: str
    reason: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActivationStats:
    """Counters since the manager was created."""

    hits: int = 0
    misses: int = 0
    disk_loads: int = 0
    spills: int = 0
    drops: int = 0
    refused: int = 0
    reused_tokens: int = 0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ActivationMemory:
    """Per-thread KV caches with prefix reuse, an LRU byte budget and spill to disk.

    Example (tiny random model, as in the tests)::

        from memos_integrations.activation import ActivationMemory
        from memos_integrations.models.testing import tiny_causal_lm
        model = tiny_causal_lm()
        mem = ActivationMemory("/tmp/cube/kv", budget_bytes=64 << 20)
        lease = mem.lookup(model, "thread-1", prompt_ids)      # a miss the first time
        cache = lease.cache or kv.new_cache(model.config)
        kv.forward(model, torch.tensor([prompt_ids[lease.reused_tokens:]]), cache)  # grows it
        mem.store(model, "thread-1", prompt_ids, cache)
    """

    def __init__(self, directory: str | Path | None = None, *,
                 budget_bytes: int = DEFAULT_BUDGET_BYTES,
                 disk_budget_bytes: int | None = None,
                 audit: Callable[..., Any] | None = None) -> None:
        if budget_bytes <= 0:
            raise InvalidInputError(f"budget_bytes must be positive, got {budget_bytes}")
        if disk_budget_bytes is not None and disk_budget_bytes <= 0:
            raise InvalidInputError(f"disk_budget_bytes must be positive or None, got {disk_budget_bytes}")
        self.budget_bytes = budget_bytes
        self.disk = KVDiskStore(directory, max_bytes=disk_budget_bytes) if directory is not None else None
        self.stats = ActivationStats()
        self._audit = audit
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.RLock()

    @classmethod
    def for_cube(cls, cube: Any, *, budget_bytes: int | None = None) -> ActivationMemory:
        """The activation memory of a cube: spills to ``cube.path / "kv"`` and audits to the cube."""
        cfg = getattr(cube, "config", None)
        if budget_bytes is None:
            budget_bytes = getattr(cfg, "kv_budget_bytes", None) or DEFAULT_BUDGET_BYTES
        from ..cube import own_folder

        return cls(own_folder(cube.path, "kv"), budget_bytes=budget_bytes,
                   disk_budget_bytes=getattr(cfg, "kv_disk_budget_bytes", None), audit=getattr(cube, "audit", None))

    # -- keys ------------------------------------------------------------------------------------
    @staticmethod
    def model_key(model: Any, adapter: str | None = None) -> str:
        """The key caches of ``model`` are stored under; ``adapter`` is an active adapter's digest."""
        base = f"{model_fingerprint(model)}:{model_dtype(model)}"
        return f"{base}+{adapter}" if adapter else base

    @property
    def resident_bytes(self) -> int:
        """Bytes of KV tensors held in RAM."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def threads(self, model_key: str | None = None) -> list[str]:
        """Thread ids with a cache in RAM or on disk (for ``model_key`` when given)."""
        with self._lock:
            ids = {t for (m, t) in self._entries if model_key in (None, m)}
            if self.disk is not None:
                ids |= {e.thread_id for e in self.disk.entries() if model_key in (None, e.model_key)}
            return sorted(i for i in ids if not i.startswith((PREFIX_THREAD, PRELOAD_THREAD)))

    # -- lookup / store --------------------------------------------------------------------------
    def lookup(self, model: Any, thread_id: str, input_ids: Sequence[int], *,
               model_key: str | None = None, also: Sequence[str] = ()) -> CacheLease:
        """A fork of the best cache for this prompt: the thread's own, one of ``also`` (e.g. the
        thread's preloaded next turn, reported as source ``"preload"``) or a shared prefix."""
        _check_thread(thread_id)
        ids = [int(t) for t in input_ids]
        key = model_key or self.model_key(model)
        dtype = model_dtype(model)
        with self._lock:
            best: tuple[int, str, _Entry | None, str] = (0, "miss", None, "")
            reason = ""
            for tid in [thread_id, *also, *self._prefix_threads(key)]:
                entry, source, why = self._resolve(model, key, tid, ids, dtype)
                reason = reason or why
                if entry is None:
                    continue
                usable = min(common_prefix(entry.token_ids, ids), len(ids) - 1)
                if tid.startswith(PREFIX_THREAD):
                    source = "prefix"
                elif tid.startswith(PRELOAD_THREAD):
                    source = "preload"
                if usable > best[0]:
                    best = (usable, source, entry, tid)
            usable, source, entry, tid = best
            if entry is None or usable <= 0:
                self.stats.misses += 1
                return CacheLease(None, 0, "miss", reason)
            if (key, tid) in self._entries:  # absent when a reloaded cache alone exceeds the budget
                self._entries.move_to_end((key, tid))
            self.stats.hits += 1
            self.stats.reused_tokens += usable
            meta = dict(entry.meta) if tid == thread_id else {}
            return CacheLease(kv.fork(entry.cache, usable, model.config), usable, source, reason, meta)

    def _prefix_threads(self, key: str) -> list[str]:
        names = {t for (m, t) in self._entries if m == key and t.startswith(PREFIX_THREAD)}
        if self.disk is not None:
            try:
                names |= {e.thread_id for e in self.disk.entries()
                          if e.model_key == key and e.thread_id.startswith(PREFIX_THREAD)}
            except CubeCorruptedError:
                pass  # reported by _resolve; lookups fall back to recomputing
        return sorted(names)

    def _resolve(self, model: Any, key: str, tid: str, ids: list[int],
                 dtype: str) -> tuple[_Entry | None, str, str]:
        """The entry for (key, tid) from RAM, else reloaded from disk when worth it."""
        entry = self._entries.get((key, tid))
        if entry is not None:
            return entry, "memory", ""
        if self.disk is None:
            return None, "miss", ""
        try:
            row = self.disk.find(key, tid)
            others = self.disk.threads_for_other_models(key, tid) if row is None else []
        except CubeCorruptedError as exc:
            log.warning("KV index unreadable, recomputing: %s", exc)
            return None, "miss", f"refused: {exc}"
        if row is None:
            return None, "miss", ("refused: cached by another model " + others[0]) if others else ""
        if min(common_prefix(row.token_ids, ids), len(ids) - 1) <= 0:
            return None, "miss", ""  # nothing to gain from reading the file
        try:
            entry = self._read(model, key, row.thread_id, row, dtype)
        except (CubeCorruptedError, ModelMismatchError) as exc:
            # A bad cache costs a recompute, never a wrong answer.
            self.stats.refused += 1
            log.warning("dropping KV cache for thread %r: %s", tid, exc)
            self._audit_event("kv.refuse", tid, {"reason": str(exc)}, allowed=False)
            self.disk.delete(key, tid)
            return None, "miss", f"refused: {exc}"
        self.stats.disk_loads += 1
        return entry, "disk", ""

    def _read(self, model: Any, key: str, tid: str, row: Any, dtype: str) -> _Entry:
        assert self.disk is not None
        tensors = self.disk.read(row, model_key=key, dtype=dtype)
        param = next(model.parameters())
        cache = kv.from_tensors(tensors, model.config, n_tokens=len(row.token_ids),
                                dtype=param.dtype, device=param.device)
        entry = _Entry(key, tid, tuple(row.token_ids), cache, kv.nbytes(cache), dtype, dict(row.meta),
                       on_disk=True)
        self._put(entry)
        return entry

    def store(self, model: Any, thread_id: str, token_ids: Sequence[int], cache: Any, *,
              model_key: str | None = None, meta: dict[str, Any] | None = None) -> None:
        """Keep ``cache`` (which covers ``token_ids``) as the thread's cache; takes ownership of it.

        The cache may cover more positions than ``token_ids`` (``generate`` does not feed the last
        token): only the first ``len(token_ids)`` are kept.
        """
        _check_thread(thread_id)
        kv.check_supported(cache)
        ids = tuple(int(t) for t in token_ids)
        have = kv.seq_len(cache)
        if not ids or have < len(ids):
            raise InvalidInputError(
                f"cache covers {have} positions but {len(ids)} token ids were given; pass the ids "
                "the cache was computed from")
        if have > len(ids):
            cache = kv.fork(cache, len(ids), model.config)
        key = model_key or self.model_key(model)
        entry = _Entry(key, thread_id, ids, cache, kv.nbytes(cache), model_dtype(model), dict(meta or {}))
        with self._lock:
            self._put(entry)

    def _put(self, entry: _Entry) -> None:
        self._entries[(entry.model_key, entry.thread_id)] = entry
        self._entries.move_to_end((entry.model_key, entry.thread_id))
        self._enforce_budget()

    def _enforce_budget(self) -> None:
        total = sum(e.nbytes for e in self._entries.values())
        # Oldest first; the newest entry goes too only when it alone exceeds the budget.
        for k in list(self._entries):
            if total <= self.budget_bytes:
                break
            entry = self._entries.pop(k)
            total -= entry.nbytes
            self._spill(entry)

    def _spill(self, entry: _Entry) -> None:
        if self.disk is None:
            self.stats.drops += 1
            return
        if entry.on_disk:
            return
        entry.on_disk = True
        self.disk.write(entry.model_key, entry.thread_id, list(entry.token_ids),
                        kv.to_tensors(entry.cache), entry.dtype, entry.meta)
        self.stats.spills += 1

    # -- shared prefixes -------------------------------------------------------------------------
    def set_prefix(self, model: Any, token_ids: Sequence[int], *, name: str = "default",
                   model_key: str | None = None) -> bool:
        """Prefill ``token_ids`` once as the shared prefix ``name``; ``True`` when it was (re)computed.

        Calling it again with other tokens (the pinned memories changed) replaces, i.e. invalidates,
        the old prefix. Threads that already grew from the old prefix keep only the part that still
        matches, because reuse is decided token by token.
        """
        import torch

        ids = [int(t) for t in token_ids]
        if not ids:
            raise InvalidInputError("a shared prefix needs at least one token")
        key = model_key or self.model_key(model)
        tid = PREFIX_THREAD + name
        with self._lock:
            current = self._entries.get((key, tid))
            if current is not None and list(current.token_ids) == ids:
                self._entries.move_to_end((key, tid))
                return False
            # The old version (or another prefix) may share a head, e.g. the system prompt.
            lease = self.lookup(model, tid, ids + [0], model_key=key)
        device = next(model.parameters()).device
        cache = lease.cache if lease.cache is not None else kv.new_cache(model.config)
        start = kv.seq_len(cache)
        if start < len(ids):
            with torch.no_grad():
                kv.forward(model, torch.tensor([ids[start:]], device=device), cache)
        self.store(model, tid, ids, cache, model_key=key)
        return True

    def invalidate_prefix(self, name: str = "default") -> int:
        """Forget the shared prefix ``name`` for every model (RAM and disk); returns entries removed."""
        return self._drop_thread(PREFIX_THREAD + name)

    # -- management ------------------------------------------------------------------------------
    def drop(self, thread_id: str) -> int:
        """Forget a thread's caches for every model (RAM and disk); returns entries removed."""
        _check_thread(thread_id)
        return self._drop_thread(thread_id)

    def _drop_thread(self, tid: str) -> int:
        removed = 0
        with self._lock:
            for k in [k for k in self._entries if k[1] == tid]:
                del self._entries[k]
                removed += 1
            if self.disk is not None:
                for row in [r for r in self.disk.entries() if r.thread_id == tid]:
                    removed += int(self.disk.delete(row.model_key, tid))
        return removed

    def thread_meta(self, thread_id: str, *, model_key: str) -> dict[str, Any]:
        """The metadata stored with a thread's cache (RAM or disk index; no tensors are read)."""
        with self._lock:
            entry = self._entries.get((model_key, thread_id))
            if entry is not None:
                return dict(entry.meta)
            row = self.disk.find(model_key, thread_id) if self.disk is not None else None
            return dict(row.meta) if row is not None else {}

    def load(self, model: Any, thread_id: str, *, model_key: str | None = None) -> tuple[list[int], Any]:
        """Strictly fetch a thread's cache as ``(token_ids, fork)``.

        Raises :class:`ItemNotFoundError` for a thread never seen, :class:`ModelMismatchError` when
        only another model's cache exists, and :class:`CubeCorruptedError` for a damaged file.
        """
        _check_thread(thread_id)
        key = model_key or self.model_key(model)
        with self._lock:
            entry = self._entries.get((key, thread_id))
            if entry is None and self.disk is not None:
                row = self.disk.find(key, thread_id)
                if row is not None:
                    entry = self._read(model, key, thread_id, row, model_dtype(model))
                else:
                    others = self.disk.threads_for_other_models(key, thread_id)
                    others += [m for (m, t) in self._entries if t == thread_id]
                    if others:
                        raise ModelMismatchError(
                            f"thread {thread_id!r} only has a cache made by model {others[0]}; this model "
                            f"is {key}. Generate with the original model, or drop the thread's cache")
            if entry is None:
                raise ItemNotFoundError(f"no KV cache for thread {thread_id!r}; run a turn on it first")
            return list(entry.token_ids), kv.fork(entry.cache, len(entry.token_ids), model.config)

    def flush(self) -> int:
        """Write every RAM entry to disk (e.g. before the process exits); returns entries written."""
        if self.disk is None:
            return 0
        with self._lock:
            for entry in self._entries.values():
                self._spill(entry)
            return len(self._entries)

    def clear(self) -> None:
        """Drop every RAM entry (disk entries stay and are reloaded on demand)."""
        with self._lock:
            self._entries.clear()

    def _audit_event(self, action: str, target: str, detail: dict[str, Any], allowed: bool = True) -> None:
        if self._audit is not None:
            try:
                self._audit(action, None, target, detail, allowed)
            except Exception:  # pragma: no cover - auditing must never break generation
                log.exception("audit hook failed")


def _check_thread(thread_id: str) -> None:
    if not isinstance(thread_id, str) or not thread_id:
        raise InvalidInputError(f"thread_id must be a non-empty string, got {thread_id!r}")
