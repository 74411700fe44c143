"""The reader's side of a cube: modes, the durable window queue, budgets, the worker, feedback.

``cube.add(messages=..., mode=...)`` comes here (see :class:`ReaderEngine.add`). Raw messages are
always stored first, exactly as in fast mode; then the new messages are cut into windows
(``ReaderConfig.window_size``), each a job in the cube's job queue (:mod:`..storage.jobs`) keyed by a
hash of its content, so an identical window is never read twice. Fine mode reads the windows before
returning; async mode returns at once and a worker thread reads them. A window's decision, its
job's "done", its usage and its audit row commit together (:func:`..textual.reconcile.apply`).

Policy: synchronous; one worker thread per cube reads queued windows in order. A process that holds
the cube exclusively gives back jobs a dead process left running when it opens the cube.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import BudgetExceededError, ConflictError, InvalidInputError, MemosError, ReaderError
from ..items import Kind, MemoryItem
from ..storage.base import Job
from ..storage.jobs import JobQueue
from ..storage.reader_usage import UsageLedger
from ..textual import cache_scope
from ..textual import reconcile as RC
from ..textual.filters import MemoryFilter
from ..textual.retrieve import BALANCED
from . import prompts
from .llm import Usage, estimate_tokens
from .reader import Candidate, LLMReader, WindowMessage
from .result import AddResult

if TYPE_CHECKING:
    from ..cube import MemCube

_log = logging.getLogger(__name__)
KIND = "read"
MEMORY_KINDS = (Kind.FACT, Kind.PREFERENCE, Kind.EVENT)
MAX_EXISTING = 8  # existing memories shown to the reconciliation call, all candidates together
#: the cube's hybrid search (dense + keyword) without graph expansion: a memory's graph neighbours are
#: the raw messages it came from, which reconciliation does not look at
NEIGHBOUR_PLAN = BALANCED.model_copy(update={"name": "reader-neighbours", "graph_hops": 0, "candidates": 20})


@dataclass
class Failure:
    """A window that was not read: the error kept on its job, and what the failed calls cost."""

    error: str
    usage: Usage


class ReaderEngine:
    """The reader's machinery for one open cube (``cube.reader_engine``)."""

    def __init__(self, cube: MemCube, reader: LLMReader | None) -> None:
        self.cube = cube
        self.reader = reader
        self.jobs = JobQueue(cube.store.db)
        self.ledger = UsageLedger(cube.store.db)
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        #: tokens of windows being read now, per budget scope: counted against the budgets until their
        #: usage is in the ledger, so adds racing past the check cannot both spend what fits one
        self._reserved: dict[str, int] = {}
        self._budget_lock = threading.Lock()
        if getattr(cube, "_hold", None) is not None:  # this process alone holds the cube: nobody runs those jobs
            requeued = self.jobs.requeue_running(KIND)
            if requeued:
                cube.audit("reader_resume", "system", cube.cube_id, {"requeued": requeued})
        if reader is not None and self.jobs.counts(KIND).get("queued"):
            self.start()

    # -- adding --------------------------------------------------------------------------------
    def add(self, messages: Sequence[Mapping[str, Any]], *, mode: str | None, user_id: str | None, agent_id: str | None,
            session_id: str | None, timestamp: Any, principal: str | None, tags: Sequence[str]) -> AddResult:
        """Store the raw messages, then read them as ``mode`` says (see the module docstring).

        Args:
            messages: chat messages, as ``cube.add`` takes them.
            mode: ``fast``, ``fine``, ``async``, or None for the reader's default.
            user_id, agent_id, session_id, timestamp, principal, tags: as ``cube.add``.

        Returns:
            An :class:`AddResult` (a list of the items written).

        Raises:
            InvalidInputError: an unknown mode, or a reading mode without a reader. Reading failures are not
                raised: the window stays queued with its error and ``note`` says so.
        """
        mode = mode or (self.reader.config.mode if self.reader is not None else "fast")
        if mode not in ("fast", "fine", "async"):
            raise InvalidInputError(f"mode must be 'fast', 'fine' or 'async', got {mode!r}")
        if mode != "fast" and self.reader is None:
            raise InvalidInputError(
                f"mode={mode!r} needs an LLM reader: MemCube.open(path, reader=LLMReader.from_openai(...)) or "
                "cube.use_reader(reader); or use mode='fast'")
        raw = self.cube.text_mem.add_messages(messages, user_id=user_id, agent_id=agent_id, session_id=session_id,
                                              timestamp=timestamp, principal=principal, tags=tags)
        if mode == "fast":
            return AddResult(raw, mode="fast")
        assert self.reader is not None
        size = self.reader.config.window_size
        scope = {"user_id": user_id, "agent_id": agent_id, "session_id": session_id, "principal": principal,
                 "tags": list(tags)}
        queued: list[Job] = []
        notes: list[str] = []
        for start in range(0, len(raw), size):
            window = raw[start:start + size]
            job, created = self.jobs.enqueue(KIND, window_key(window, scope), {**scope, "ids": [i.id for i in window]},
                                             user_id=user_id)
            if created or job.state != "done":
                queued.append(job)
            else:
                notes.append(f"an identical window was read already (job {job.id}): not read again")
        if mode == "async":
            self.start()
            return AddResult(raw, jobs=[j.id for j in queued], mode="async",
                             note="; ".join(notes + [f"{len(queued)} window(s) queued"]) or None)
        return self._fine(raw, queued, notes)

    def _fine(self, raw: list[MemoryItem], queued: list[Job], notes: list[str]) -> AddResult:
        assert self.reader is not None
        cfg = self.reader.config
        began = time.perf_counter()
        result = AddResult(raw, mode="fine", jobs=[j.id for j in queued])
        left: list[Job] = []
        for job in queued:
            spent = time.perf_counter() - began
            if cfg.fine_latency_s is not None and spent >= cfg.fine_latency_s:
                left.append(job)
                continue
            if cfg.fine_token_budget is not None and result.usage.tokens + self._estimate(job) > cfg.fine_token_budget:
                left.append(job)
                continue
            claimed = self.jobs.claim(KIND, lease_s=self._lease(), ids=[job.id])
            if claimed is None:  # the worker has it, or its retry is not due yet: the queue finishes it
                left.append(job)
                continue
            timeout = cfg.timeout_s if cfg.fine_latency_s is None else max(0.1, min(cfg.timeout_s, cfg.fine_latency_s - spent))
            outcome = self.process(claimed, timeout=timeout)
            if isinstance(outcome, Failure):
                result.usage = result.usage + outcome.usage
                notes.append(f"window {job.id} was not read ({outcome.error}); its raw messages are stored and it "
                             "stays queued with this error (cube.pending())")
                continue
            result.extend(outcome.items)
            result.operations.extend(outcome.operations)
            result.refused.extend(outcome.refused)
            result.usage = result.usage + outcome.usage
        if left:
            why = "fine_latency_s" if cfg.fine_latency_s is not None and time.perf_counter() - began >= cfg.fine_latency_s \
                else "fine_token_budget"
            notes.append(f"fell back from fine to fast for {len(left)} window(s) ({why} reached): their raw messages "
                         "are stored and they are read in the background (cube.wait())")
            self.start()
        result.note = "; ".join(notes) or None
        return result

    # -- reading one window --------------------------------------------------------------------
    def process(self, job: Job, *, timeout: float | None = None) -> RC.Applied | Failure:
        """Read a claimed window and apply its decision; on failure keep the job queued (or failed) with
        the error, count what the failed calls cost, audit it, and return the :class:`Failure`."""
        assert self.reader is not None
        cfg = self.reader.config
        usage = Usage()
        try:
            # the worker thread serves no request: its query vectors are cached under the window's user
            with cache_scope.scoped(job.user_id or ""):
                return self._read(job, timeout)
        except MemosError as exc:
            final = isinstance(exc, BudgetExceededError) or job.attempts >= cfg.max_attempts
            error = f"{type(exc).__name__}: {exc}"
            usage = getattr(exc, "usage", None) or usage
        except Exception as exc:  # noqa: BLE001 - a worker must survive any failure; kept with its type, logged
            _log.exception("reading window %s failed", job.id)
            final = job.attempts >= cfg.max_attempts
            error = f"{type(exc).__name__}: {exc}"
        user = job.user_id
        try:
            with self.cube.store.transaction():
                try:
                    self.jobs.fail(job.id, error, final=final, retry_after=cfg.backoff_s * (2 ** job.attempts),
                                   attempt=job.attempts)
                except ConflictError:  # another worker took the window after our lease ran out: its outcome stands
                    final = False  # what our calls cost is still counted below
                if usage.calls:
                    self.ledger.add(["cube"] + ([f"user:{user}"] if user is not None else []), usage.prompt_tokens,
                                    usage.completion_tokens, usage.calls, usage.seconds, usage.cost or 0.0)
                self.cube.audit("reader_failed", job.payload.get("principal") or user, f"job:{job.id}",
                                {"error": error[:500], "attempt": job.attempts, "final": final, "usage": usage.to_dict()},
                                allowed=False)
        except MemosError:  # the cube was closed under the worker: the lease expires and the job is read again
            _log.warning("could not record the failure of window %s (cube closed?)", job.id)
        return Failure(error, usage)

    def _read(self, job: Job, timeout: float | None) -> RC.Applied:
        assert self.reader is not None
        payload = job.payload
        found = self.cube.store.get_items(list(payload.get("ids") or []))
        window = [_window_message(found[i]) for i in payload.get("ids") or [] if i in found]
        user = payload.get("user_id")
        if not window:  # deleted before it was read: nothing to read, done
            with self.cube.store.transaction():
                self.jobs.finish(job.id, {"operations": [], "note": "messages deleted before reading"}, attempt=job.attempts)
            return RC.Applied()
        reserved = self._check_budget(user, self._estimate(job, window))
        try:
            return self._read_reserved(job, window, timeout)
        finally:
            self._release(reserved)

    def _read_reserved(self, job: Job, window: list[WindowMessage], timeout: float | None) -> RC.Applied:
        assert self.reader is not None
        payload = job.payload
        user = payload.get("user_id")
        reader = self.reader
        ext = reader.extract(window, timeout=timeout)
        existing, vectors = self._existing(ext.candidates, ext.forget, payload)
        rec = reader.reconcile(ext.candidates, ext.forget, existing, timeout=timeout)
        usage = ext.usage + rec.usage
        changes = [self._change(d, payload, reader) for d in rec.decisions]
        principal = payload.get("principal") or user

        def commit(applied: RC.Applied) -> None:
            applied.refused[:0] = ext.refused + rec.refused
            ops = [list(o) for o in applied.operations]
            self.jobs.finish(job.id, {"operations": ops, "usage": usage.to_dict(), "refused": applied.refused},
                             attempt=job.attempts)
            scopes = ["cube"] + ([f"user:{user}"] if user is not None else [])
            self.ledger.add(scopes, usage.prompt_tokens, usage.completion_tokens, usage.calls, usage.seconds, usage.cost or 0.0)
            self.cube.audit("reader_apply", principal, f"job:{job.id}", {
                "reader": reader.name, "usage": usage.to_dict(), "operations": [o[0] for o in applied.operations],
                "refused": applied.refused[:20]})

        applied = RC.apply(self.cube.text_mem, changes, principal=principal, vectors=vectors, on_commit=commit)
        applied.usage = usage
        return applied

    def _existing(self, candidates: Sequence[Candidate], forget: Sequence[str], payload: Mapping[str, Any]) -> tuple[list[MemoryItem], dict[str, Any]]:
        """The user's nearest current memories for each candidate and forget request (hybrid search)."""
        assert self.reader is not None
        k = self.reader.config.neighbours
        texts = [c.text for c in candidates] + list(forget)
        if not texts or k == 0:
            return [], {}
        vecs = self.cube.embedder.embed_documents(texts)
        flt = MemoryFilter(user_id=payload.get("user_id"), kinds=list(MEMORY_KINDS), current=True)
        seen: dict[str, MemoryItem] = {}
        for text, vec in zip(texts, vecs):
            for hit in self.cube.text_mem.search(text, flt, top_k=k, query_vector=vec, plan=NEIGHBOUR_PLAN):
                if hit.item.user_id == payload.get("user_id"):  # a window of no user sees only memories of no user
                    seen.setdefault(hit.item.id, hit.item)
        return list(seen.values())[:MAX_EXISTING], {t: v for t, v in zip(texts, vecs)}

    def _change(self, d: Any, payload: Mapping[str, Any], reader: LLMReader) -> RC.Change:
        c: Candidate | None = d.candidate
        if c is None:
            return RC.Change(d.op, target=d.target, reason=d.reason)
        meta: dict[str, Any] = {"reader": reader.name, "source_items": c.sources, "op": d.op, "reason": d.reason}
        if c.preference:
            meta["preference"] = c.preference
        if c.entities:
            meta["entities"] = c.entities
        if c.relations:
            meta["relations"] = c.relations
        new = RC.memory_item(
            c.text, c.kind, user_id=payload.get("user_id"), agent_id=payload.get("agent_id"),
            session_id=payload.get("session_id"), event_time=c.event_time, valid_from=c.valid_from,
            sources=c.message_ids or c.sources, created_by=payload.get("principal") or payload.get("user_id"),
            method=f"{LLMReader.method}:{reader.backend.model}", confidence=c.confidence,
            tags=list(payload.get("tags") or []), metadata=meta)
        return RC.Change(d.op, target=d.target, new=new, since=c.valid_from, reason=d.reason)

    # -- budgets -------------------------------------------------------------------------------
    def _estimate(self, job: Job, window: Sequence[WindowMessage] | None = None) -> int:
        if window is None:
            found = self.cube.store.get_items(list(job.payload.get("ids") or []))
            window = [_window_message(it) for it in found.values()]
        chars = len(prompts.EXTRACT_SYSTEM) + sum(len(m.text) + len(m.speaker) + 24 for m in window)
        return estimate_tokens("x" * chars)

    def _check_budget(self, user: str | None, estimate: int) -> dict[str, int]:
        """Refuse a window the budgets cannot take, counting windows being read now; reserve its estimate
        (returned, to :meth:`_release` once its usage is in the ledger or it failed)."""
        assert self.reader is not None
        cfg = self.reader.config
        limits = {scope: budget for scope, budget in
                  (("cube", cfg.cube_token_budget), (f"user:{user}", cfg.user_token_budget if user else None))
                  if budget is not None}
        with self._budget_lock:
            for scope, budget in limits.items():
                used = self.ledger.tokens(scope)
                busy = self._reserved.get(scope, 0)
                if used + busy + estimate > budget:
                    raise BudgetExceededError(
                        f"the {scope} token budget is {budget} and {used} are spent"
                        + (f" ({busy} more reserved by windows being read now)" if busy else "")
                        + f"; this window needs about {estimate}. "
                        "Raise ReaderConfig.user_token_budget / cube_token_budget, then cube.retry_failed()")
            for scope in limits:
                self._reserved[scope] = self._reserved.get(scope, 0) + estimate
        return {scope: estimate for scope in limits}

    def _release(self, reserved: dict[str, int]) -> None:
        with self._budget_lock:
            for scope, tokens in reserved.items():
                left = self._reserved.get(scope, 0) - tokens
                if left > 0:
                    self._reserved[scope] = left
                else:
                    self._reserved.pop(scope, None)

    def usage(self, user_id: str | None = None) -> dict[str, float]:
        return self.ledger.totals("cube" if user_id is None else f"user:{user_id}")

    def _lease(self) -> float:
        assert self.reader is not None
        cfg = self.reader.config
        return 2 * cfg.timeout_s * (cfg.max_retries + 1) + 30

    # -- the worker ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread that reads queued windows (once; it idles when there is nothing)."""
        if self.reader is None:
            return
        with self._start_lock:
            if self._worker is not None and self._worker.is_alive():
                self._wake.set()
                return
            self._stop.clear()
            self._worker = threading.Thread(target=self._run, name=f"memos-reader-{self.cube.cube_id}", daemon=True)
            self._worker.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.jobs.claim(KIND, lease_s=self._lease())
            except MemosError:  # the cube closed
                return
            if job is None:
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            self.process(job)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no window is queued or running (failed ones stay in :meth:`pending`); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.start()
        while True:
            counts = self.jobs.counts(KIND)
            if not counts.get("queued") and not counts.get("running"):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def pending(self, user_id: str | None = None) -> list[Job]:
        return self.jobs.pending(KIND, user_id)


def window_key(window: Sequence[MemoryItem], scope: Mapping[str, Any]) -> str:
    """The content hash that makes a window idempotent: who, and what was said when (not the item ids)."""
    body = [scope.get("user_id"), scope.get("agent_id"),
            [(it.metadata.get("speaker"), it.text, it.event_time.isoformat() if it.event_time else None) for it in window]]
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode("utf-8", "surrogatepass")).hexdigest()


def _window_message(item: MemoryItem) -> WindowMessage:
    speaker = item.metadata.get("speaker")
    return WindowMessage(id=item.id, text=item.text, speaker=speaker if isinstance(speaker, str) else "user",
                         time=item.event_time, message_id=item.sources[0] if item.sources else None)


__all__ = ["ReaderEngine", "ReaderError", "window_key"]
