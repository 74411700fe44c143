"""Next-turn preloading: after a reply, prefill what the thread's next turn will need, in the background.

Part of activation memory (``activation/``); the local runtime
(:class:`memos_integrations.models.LocalRuntime` with ``preload=True``) schedules a prediction after
every reply on a thread and consults it when the thread's next message arrives. This is the
"next-turn preloading" MemOS describes: the scheduler predicts the memories the next turn will need
(those nearest the thread's latest turns: the last user message and the reply) and prefills the next
prompt up to where the user's message will go (system prefix, history, predicted memory block) into
a forked cache of the thread, stored as ``__preload__/<thread>``.

When the next message arrives the runtime still retrieves for it (``retrieve``, today's block ``R``).
Reuse is by token prefix, so the block a turn can take from the preloaded cache is a *head* of the
predicted candidates ``C`` (in prediction order) followed by what it lacks
(:meth:`LocalRuntime._merge_prediction`):

* **hit**: every memory of ``R`` is among the first ``m`` candidates and ``C[:m]`` fits the block's
  token budget; the block is ``C[:m]`` (the shortest such head), so only the message is prefilled.
  The prompt is today's rendering of that block: it holds every memory today's block holds, in
  prediction order, plus the candidates ranked above them (none when ``R`` is ``C[:len(R)]``).
* **partial**: some of ``R`` were not predicted; the block is the longest head ``C[:j]`` (``j <= m``)
  that fits with them, followed by them in retrieval order; those are prefilled with the message.
* **miss**: no head fits; the block is ``R`` (today's prompt) and the preloaded cache still serves
  the history before it.

Nothing here can change an answer: the cache is chosen by exact token identity
(:meth:`ActivationMemory.lookup`), so a stale or wrong prediction only costs prefill. A prediction
is discarded when the thread's history differs from the one it was made for (edited, regenerated,
another user), when its model or adapter changed, or when a new turn starts before it is ready.

Concurrency: one worker thread; each prefill chunk takes the runtime's lock (the same lock turns
take), so a turn waits at most one chunk for the worker, and a turn cancels its thread's prediction.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .memory import PRELOAD_THREAD

log = logging.getLogger(__name__)
CHUNK_TOKENS = 32  # prefill per lock hold: a turn that arrives waits at most this much
_MARK = "\x00memos-next-message\x00"


def history_digest(messages: Sequence[dict[str, str]], user_id: str | None) -> str:
    """Identity of a thread's history (every message, in order) as seen by ``user_id``."""
    body = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)
    return hashlib.sha256(f"{user_id}\0{body}".encode()).hexdigest()[:24]


@dataclass
class Prediction:
    """What was predicted for a thread's next turn, and whether its cache is ready."""

    thread_id: str
    user_id: str | None
    model_key: str
    basis: str  # history_digest of the history it was made for
    epoch: int
    memory_ids: list[str] = field(default_factory=list)
    memory_texts: list[str] = field(default_factory=list)
    tokens: int = 0
    ready: bool = False


@dataclass
class PreloadStats:
    scheduled: int = 0
    ready: int = 0
    hits: int = 0
    partial: int = 0
    misses: int = 0
    discarded: int = 0
    cancelled: int = 0


class Preloader:
    """Predicts and prefills each thread's next turn in one background worker."""

    def __init__(self, runtime: Any, *, top_k: int | None = None, chunk_tokens: int = CHUNK_TOKENS) -> None:
        self.runtime = runtime
        self.top_k = top_k
        self.chunk_tokens = chunk_tokens
        self.stats = PreloadStats()
        self._lock = threading.Lock()
        self._epochs: dict[str, int] = {}
        self._predictions: dict[str, Prediction] = {}
        self._pending: list[Future[None]] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memos-preload")

    # -- called by the runtime -------------------------------------------------------------------
    def cancel(self, thread_id: str) -> None:
        """A turn starts on ``thread_id``: a prediction still being made for it stops."""
        with self._lock:
            self._epochs[thread_id] = self._epochs.get(thread_id, 0) + 1

    def schedule(self, thread_id: str, user_id: str | None, history: Sequence[dict[str, str]],
                 model_key: str, *, query: str | None = None) -> None:
        """Predict and prefill the turn after ``history`` (which ends with the reply just given);
        ``query`` is what to retrieve the candidates for (default: the last user message and reply)."""
        with self._lock:
            epoch = self._epochs.get(thread_id, 0) + 1
            self._epochs[thread_id] = epoch
            job = Prediction(thread_id, user_id, model_key, history_digest(history, user_id), epoch)
            self._predictions[thread_id] = job
            self.stats.scheduled += 1
            self._pending = [f for f in self._pending if not f.done()]
            # the caller's context rides along: its cache scope keeps the predicted query's vector its user's
            run = contextvars.copy_context().run
            self._pending.append(self._pool.submit(run, self._run, job, [dict(m) for m in history], query))

    def take(self, thread_id: str, user_id: str | None, history: Sequence[dict[str, str]],
             model_key: str) -> tuple[Prediction | None, str]:
        """The ready prediction made for exactly this history, or ``(None, why not)``; a prediction
        that does not match is discarded (its cache dropped)."""
        with self._lock:
            job = self._predictions.pop(thread_id, None)
        if job is None:
            return None, ""
        why = ""
        if job.basis != history_digest(history, user_id):
            why = "discarded: the thread changed since the prediction"
        elif job.model_key != model_key:
            why = "discarded: made for another model or adapter"
        elif not job.ready:
            why = "discarded: not ready when the message arrived"
        if why:
            self.stats.discarded += 1
            self.runtime.act_mem.drop(PRELOAD_THREAD + thread_id)
            return None, why
        return job, ""

    def wait(self, timeout: float | None = None) -> None:
        """Block until every scheduled prediction has finished (tests and benchmarks)."""
        with self._lock:
            pending = list(self._pending)
        for f in pending:
            f.result(timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- the worker ------------------------------------------------------------------------------
    def _current(self, job: Prediction) -> bool:
        with self._lock:
            return self._epochs.get(job.thread_id) == job.epoch

    def _run(self, job: Prediction, history: list[dict[str, str]], query: str | None) -> None:
        try:
            self._predict(job, history, query)
        except Exception:  # a failed prediction is only a missed optimisation; say why in the log
            log.exception("next-turn preloading failed for thread %r", job.thread_id)

    def _predict(self, job: Prediction, history: list[dict[str, str]], query: str | None) -> None:
        import torch

        from . import kv

        rt = self.runtime
        recent = query if query is not None else "\n".join(
            m["content"] for m in history[-2:] if m["role"] in ("user", "assistant"))
        pinned = rt.pinned_memories(job.user_id)
        k = self.top_k if self.top_k is not None else 4 * rt.top_k
        # cut to the block's budget: a hit's block is a head of these, and must fit it too
        ids, texts = rt.retrieve(recent, job.user_id, top_k=k, exclude=pinned)
        if not self._current(job):
            return
        # nothing predicted (an empty cube, nothing near the last turns) still prefills the history
        # up to the next message: a turn that retrieves nothing then prefills only its message
        job.memory_ids, job.memory_texts = ids, texts
        contexts: dict[str, str] = {}
        if rt.turn_memories == "keep":
            meta = rt.act_mem.thread_meta(job.thread_id, model_key=job.model_key)
            contexts = meta.get("contexts", {}) if meta.get("user_id") == job.user_id else {}
        target = rt.encode_until_next_message(history, user_id=job.user_id, memories=texts, pinned=pinned,
                                              contexts=contexts)
        job.tokens = len(target)
        cache: Any = None
        pos = 0
        while True:
            with rt._lock:
                if not self._current(job):
                    self.stats.cancelled += 1
                    return
                route = rt.para_mem.route(job.user_id) if rt.para_mem is not None else None
                model = rt.model
                if route is not None and rt.act_mem.model_key(model, None) == job.model_key:
                    route = None  # the reply ran on the base model (a router left the adapter out): so does this
                if rt.act_mem.model_key(model, route.digest if route is not None else None) != job.model_key:
                    return  # the user's adapter changed since the reply
                with rt._adapter_scope(model, route), torch.no_grad():
                    if cache is None:
                        lease = rt.act_mem.lookup(model, job.thread_id, target, model_key=job.model_key)
                        cache = lease.cache if lease.cache is not None else kv.new_cache(model.config)
                        pos = lease.reused_tokens
                    if pos >= len(target):
                        rt.act_mem.store(model, PRELOAD_THREAD + job.thread_id, target, cache,
                                         model_key=job.model_key)
                        job.ready = True
                        self.stats.ready += 1
                        return
                    device = next(model.parameters()).device
                    chunk = target[pos:pos + self.chunk_tokens]
                    kv.forward(model, torch.tensor([chunk], device=device), cache)
                    pos += len(chunk)
