"""The service's embedder as a token source for the ``late`` preset (textual/late.py).

Why: ``late`` compares a question's contextual token vectors with each candidate's, both taken from the
forward pass that made their pooled vector. In the service that pass runs in the embedding child
(textual/embed_process.py) or in the query batcher's worker thread, where the request's
:func:`~memos_integrations.textual.late.capture` cannot see it: items added through the service got no
token vectors and a ``late`` search ranked exactly as ``learned``.

How: :class:`LateBatched` is the service's :class:`~memos_integrations.textual.batching.BatchedEmbedder`
with these differences:

- **documents** are embedded with their token vectors (the child's ``embed_with_tokens``; in process, a
  capture around the pass in the worker thread). The rows are kept by text for a short while
  (:meth:`late_recent`: a write that embedded its texts before its transaction finds them there) and
  handed to the request's open capture, so the write stores them as an embedded add does (same bits).
- **a late search's query** (embedded while a capture is open: :func:`~memos_integrations.textual.late.
  query_pass`) is embedded alone in fp32 with its token vectors, not in the shared int8 batches: the int8
  pass keeps no token vectors, and the fp32 pass makes the query vector the embedded cube's default one,
  so a late search through the service ranks as ``MemCube.search(plan="late")`` does. The other texts a
  late search embeds (the speakers' names) are fp32 too, inside :func:`search_plan`, which the search routes
  (REST, the face route, MCP) open around a search. Every other search takes the int8 batches as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from ..textual import cache_scope, late
from ..textual.batching import _LRU, _SHARED_MAX_CHARS, BatchedEmbedder

#: documents whose token vectors are kept by text (a write picks them up within its request): at most 64 x 256
#: tokens x 388 bytes (6 MiB), typically 64 x 30 tokens (0.7 MiB)
RECENT = 64


class _Recent:
    """Recent documents' token rows by text, least recently used dropped first (thread-safe)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, text: str, rows: tuple[np.ndarray, np.ndarray]) -> None:
        with self._lock:
            self._data[text] = rows
            self._data.move_to_end(text)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def get(self, text: str) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            return self._data.get(text)


class LateBatched(BatchedEmbedder):
    """A batched MiniLM (in ``process`` when given) that is a token source for ``late`` (module docstring).

    Args:
        inner: the serving MiniLM (its tokenizer and, without a process, its passes).
        process: the embedding child, or None to embed in this process.
        max_batch: as :class:`BatchedEmbedder`.
    """

    def __init__(self, inner: Any, process: Any = None, *, max_batch: int = 32) -> None:
        from ..textual.embed import MiniLMEmbedder

        self._recent = _Recent(RECENT)
        self._fp32_cache = _LRU(256)  # a late search's fp32 query vectors, per user scope as the int8 ones
        # a late query's fp32 pass in this process (shares the loaded model)
        self._fp32 = MiniLMEmbedder(inner.model_dir, batch_size=inner.batch_size, backend=inner.backend,
                                    query_precision="fp32")
        many = process.embed_queries if process is not None else inner.embed_queries
        super().__init__(inner, many, max_batch=max_batch, embed_docs=self._documents, process=process)

    @property
    def late_tokenizer(self) -> Any:
        """The MiniLM tokenizer (the texts' token ids key their rows)."""
        return self.inner._model.tokenizer

    def late_recent(self, text: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The token rows of ``text`` when it was embedded as a document lately, else None."""
        return self._recent.get(text)

    def _documents(self, texts: list[str], here: bool = False) -> np.ndarray:
        """``embed_documents(texts)`` (in the process unless ``here``), each text's token rows kept (:meth:`late_recent`)."""
        return self._documents_rows(texts, here)[0]

    def _documents_rows(self, texts: list[str], here: bool = False) -> tuple[np.ndarray, list[Any]]:
        """:meth:`_documents` and each text's rows (None where the pass kept none): a caller of many texts
        takes them from here, as the LRU holds only the last :data:`RECENT`."""
        try:
            encodings = self.late_tokenizer.encode_batch(texts)
        except Exception:  # noqa: BLE001 - a text the model refuses (a lone surrogate): its own error, from the pass
            return (self.process.embed_documents(texts) if self.process is not None and not here else
                    self.inner.embed_documents(texts)), [None] * len(texts)
        if self.process is not None and not here:
            vectors, rows = self.process.embed_with_tokens("document", texts, [len(e.ids) for e in encodings])
        else:
            with late.capture() as got:
                vectors = self.inner.embed_documents(texts)
            rows = [got.get(tuple(e.ids)) for e in encodings]
        for text, held in zip(texts, rows):
            if held is not None:
                self._recent.put(text, held)
        return vectors, list(rows)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if self.doc_batcher is not None and not self._closed and len(texts) == 1 and len(texts[0]) <= _SHARED_MAX_CHARS:
            vector = self.doc_batcher.embed(texts[0])[None, :]
            rows = [self._recent.get(texts[0])]
        elif texts:
            # several texts, or a long one, stay in this process (as BatchedEmbedder: they would hold the searches)
            vector, rows = self._documents_rows(list(texts), here=True)  # rows from the pass, not the LRU
        else:
            return self.inner.embed_documents(texts)  # type: ignore[no-any-return]
        if late.capturing():  # an add's pass: its rows go to the write, as in an embedded add
            for held, enc in zip(rows, self.late_tokenizer.encode_batch(list(texts))):
                if held is not None:
                    late.put(enc.ids, *held)
        return vector  # type: ignore[no-any-return]

    def clear_query_cache(self) -> None:
        self._fp32_cache.clear()
        super().clear_query_cache()

    def embed_query(self, text: str) -> np.ndarray:
        capturing = late.capturing()
        if not capturing and not _FP32.get():
            return super().embed_query(text)
        key = (cache_scope.current(), text)
        if not capturing:  # another text a late search embeds (a speaker's name): fp32, as the embedded default
            found = self._fp32_cache.get(key)
            if found is None:
                found = (self.process.embed_queries([text], "fp32") if self.process is not None
                         else self._fp32.embed_queries([text]))[0]
                self._fp32_cache.put(key, found)
            return found  # type: ignore[no-any-return]
        # a late search's query pass: fp32 with its token vectors (module docstring), not cached as an int8 one
        if self.process is None:
            vector = self._fp32.embed_queries([text])[0]  # the pass puts its rows itself
        else:
            try:
                ids = self.late_tokenizer.encode(text).ids
            except Exception:  # noqa: BLE001 - a text the model refuses: its own error, from the pass
                return self.process.embed_queries([text], "fp32")[0]  # type: ignore[no-any-return]
            vectors, rows = self.process.embed_with_tokens("query", [text], [len(ids)])
            late.put(ids, *rows[0])
            vector = vectors[0]
        self._fp32_cache.put(key, vector)
        return vector  # type: ignore[no-any-return]


_FP32: ContextVar[bool] = ContextVar("memos_late_search", default=False)


@contextmanager
def search_plan(plan: Any) -> Iterator[None]:
    """Run a search of ``plan`` (a name, a SearchPlan or None) in this block: a late one embeds every query text
    in fp32 (its query with its token vectors, the speakers' names it embeds too), as ``MemCube.search`` does
    with the embedded default, so it ranks as there; any other plan as before."""
    from ..textual.retrieve import plan_named

    if plan is None or plan_named(plan).fusion != "late":
        yield
        return
    token = _FP32.set(True)
    try:
        yield
    finally:
        _FP32.reset(token)
