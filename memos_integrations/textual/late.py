"""Late interaction for the ``late`` preset: ``learned`` plus MaxSim over MiniLM's contextual token vectors.

Why: LoCoMo's category 1 (multi-hop, list) evidence shares few words and little pooled meaning with the
question; comparing the question's content words one by one with each candidate's content words
(ColBERT's MaxSim) finds it where one pooled vector does not. Measured held out (leave one conversation
out, ``benchmarks/fit_fusion.py --extra late_maxsim_z,...``): :data:`WEIGHTS`' comment.

Where the vectors come from, without a second forward pass:

- **Documents**: :func:`capture` around :func:`.embed.item_vectors`' pass collects each text's last-layer
  token vectors (the encoders call :func:`seen`); :func:`stash` keeps, per item, the unit vectors of its
  own views' content words (stop words and the names of its speaker and of the speakers of its context
  left out), int8 with a scale per row, beside the exact vector they came with. The store writes them in
  the item's transaction (``storage/tables/late_tokens.py``) only beside that same vector.
- **Queries**: the search embeds its query inside :func:`capture`; the question's token vectors are held
  (per user scope, :data:`_QUERIES`) for :func:`query_tokens`. A query whose vector came from the query
  cache embedded by another plan costs one more pass here, once.
- **The service** (``server/late_embed.py``): its embedder runs the passes in the embedding child or the
  query batcher's thread, where no capture is open, so it is a *token source* (:func:`_source`): it hands
  the open capture (:func:`capturing`) each text's rows with :func:`put` (the child sends them int8, as
  :func:`seen` holds them, checked at the socket), keeps a document's rows by text for a write that embedded
  first (``late_recent``), and embeds a late search's query in fp32 with its rows (its int8 query pass keeps
  none). A late search through the service ranks as the embedded one (tests/integration/test_svc7_*.py).

When there is nothing to compare (an embedder that is neither the in-process :class:`.embed.MiniLMEmbedder`
nor a token source, queries embedded in int8 in process, a cube without stored token vectors (written
before this release: ``memcube reindex --reembed`` writes them, on SQLite and PostgreSQL alike), or fewer than half of a question's candidates with them), :func:`scorer` returns None and ``late``
ranks exactly as ``learned``. Candidates
without token vectors among others that have them score the question's mean on the late columns
(:func:`candidate_columns`).
Only candidates the legs found under the search's filter are scored, each with its own row's tokens
(a row must name the candidate's item id).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import numpy as np

from . import cache_scope

if TYPE_CHECKING:
    from ..items import MemoryItem

#: the late columns, appended to :data:`.fusion_features.NAMES` (fit_fusion's ``--extra`` spells them so)
NAMES = ("late_maxsim_z", "late_qmean_z", "late_qmax_z", "late_qhead_z")

#: the late re-scorer's weights by feature name (:data:`.fusion_features.NAMES`, then :data:`NAMES`) for a
#: question that does not ask for a list (:data:`LIST_WEIGHTS` for one that does, ``list_*`` features folded
#: into the ones they equal there): logistic regression fitted with the learned features on the LoCoMo dev
#: conversations' cubes built with token vectors, L2 0.001 (best held-out recall), rounded to 0.01 (``python -m
#: benchmarks.fit_fusion --models pointwise --l2 0.01,0.001,0.0001 --nested --split-list --extra
#: late_maxsim_z,late_qmean_z,late_qmax_z,late_qhead_z --write``). Nested leave-one-conversation-out: R@10 in 400
#: words 0.810, category 1 0.562 / 2 0.883 / 3 0.576 / 4 0.892 (learned on the same cubes: docs/organize.md);
#: the same flat-cube fit scored on each held-out conversation's organised cubes: 0.809, category 1 0.565
#: (``benchmarks.fit_fusion_layouts``; fitting on organised cubes, or on both layouts, did worse held out).
#: Read as: a turn whose content words each find a close contextual match in the question's content words
#: (MaxSim) rises, as does one whose pooled vector is near the question's content words' mean or its head
#: phrase ("activities", "books"); the best single-word match (qmax) weighs negative beside the mean (qmean).
WEIGHTS: Mapping[str, float] = {
    "bias": -3.68,
    "fused_rr": 0.78,
    "fused_score": 2.57,
    "dense_rr": -0.75,
    "dense_cos": 0.36,
    "unnamed_rr": 0.58,
    "keyword_rr": -0.57,
    "keyword_score": 1.53,
    "hop_only": 0.53,
    "named_speaker": 0.22,
    "other_speaker": -1.84,
    "content": 0.65,
    "session_share": 0.54,
    "near_best": 2.36,
    "next_fused": 0.67,
    "late_maxsim_z": 0.58,
    "late_qmean_z": 0.31,
    "late_qmax_z": -0.35,
    "late_qhead_z": 0.21,
}
LIST_WEIGHTS: Mapping[str, float] = {
    "bias": -2.0,
    "fused_rr": 0.92,
    "fused_score": 1.08,
    "dense_rr": 0.34,
    "dense_cos": 0.04,
    "unnamed_rr": -0.25,
    "keyword_rr": -0.1,
    "keyword_score": 0.64,
    "hop_only": -0.09,
    "named_speaker": -0.1,
    "other_speaker": -1.88,
    "content": 0.5,
    "session_share": 0.37,
    "near_best": 0.29,
    "next_fused": 0.36,
    "late_maxsim_z": 0.64,
    "late_qmean_z": 0.24,
    "late_qmax_z": -0.32,
    "late_qhead_z": 0.48,
}

_SINK: ContextVar[dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] | None] = ContextVar("memos_late_sink", default=None)
_PENDING: ContextVar[dict[str, tuple[bytes, np.ndarray, np.ndarray]] | None] = ContextVar(
    "memos_late_pending", default=None)


@contextmanager
def capture() -> Iterator[dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]]:
    """Collect the last-layer token vectors (by the text's token ids) of every MiniLM pass in the block."""
    got: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
    token = _SINK.set(got)
    try:
        yield got
    finally:
        _SINK.reset(token)


def seen(batch_ids: Sequence[Sequence[int]], x: Any, counts: Sequence[int]) -> None:
    """Called by the encoders with a pass's packed last layer ``x`` (tokens, hidden): kept inside :func:`capture`."""
    sink = _SINK.get()
    if sink is None:
        return
    rows = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
    at = 0
    for ids, c in zip(batch_ids, counts):
        sink[tuple(ids)] = quantise(np.asarray(rows[at:at + c], dtype=np.float32))  # int8: a quarter of fp32
        at += c


def capturing() -> bool:
    """Whether a :func:`capture` is open in this context (a token source then hands its pass's rows to :func:`put`)."""
    return _SINK.get() is not None


def put(ids: Sequence[int], q: np.ndarray, scale: np.ndarray) -> None:
    """Hand one text's last-layer rows (int8 and scales, as :func:`seen` holds them) to the open :func:`capture`:
    what a token source (an embedder whose pass runs elsewhere) calls for each text it embedded."""
    sink = _SINK.get()
    if sink is not None:
        sink[tuple(ids)] = (q, scale)


def _tokenizer(embedder: Any) -> Any:
    """The MiniLM tokenizer of ``embedder``: the in-process :class:`.embed.MiniLMEmbedder`'s, or a token
    source's (``late_tokenizer``); None for any other embedder."""
    from .embed import MiniLMEmbedder

    if type(embedder) is MiniLMEmbedder:  # a subclass or proxy may embed elsewhere
        return getattr(embedder._model, "tokenizer", None)
    return _source(embedder)


def _source(embedder: Any) -> Any:
    """A token source's tokenizer, else None. A token source (the service's embedder,
    ``server/late_embed.py``) offers ``late_tokenizer`` (its MiniLM's), embeds a query in fp32 when
    :func:`capturing`, hands :func:`put` the rows of every text it embeds while one is open, and offers
    ``late_recent(text)``: the rows of a document it embedded lately (a write that embedded its texts
    before its transaction)."""
    if getattr(type(embedder), "late_tokenizer", None) is None:  # the class says so (a proxy's getattr does not)
        return None
    return embedder.late_tokenizer


def word_rows(pieces: Sequence[str], keep: set[str]) -> list[int]:
    """Indices of the word pieces whose whole word (pieces joined) is in ``keep``."""
    out: list[int] = []
    word, rows = "", []
    for i, p in enumerate([*pieces, ""]):
        if p.startswith("##"):
            word += p[2:]
            rows.append(i)
            continue
        if word and word in keep:
            out.extend(rows)
        word, rows = p, [i]
    return out


def _unit(m: np.ndarray) -> np.ndarray:
    return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)


def quantise(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit rows as int8 with one float32 scale per row (``q * scale`` is the row)."""
    top = np.abs(rows).max(axis=1) if len(rows) else np.zeros(0, dtype=np.float32)
    scale = (np.maximum(top, 1e-12) / 127.0).astype(np.float32)
    q = np.clip(np.round(rows / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def _names(item: Any) -> set[str]:
    """Name words of the item's speaker and of the speakers of its context lines (left out of its tokens)."""
    from .retrieve import keyword_terms

    who = [(getattr(item, "metadata", {}) or {}).get("speaker")]
    who += [line.partition(": ")[0] for line in (getattr(item, "context", "") or "").split("\n") if ": " in line]
    return {w for s in who if isinstance(s, str) and s for w in keyword_terms(s, None)}


def content_tokens(text: str, ids: Sequence[int], pieces: Sequence[str], rows: np.ndarray, names: set[str]) -> np.ndarray:
    """The unit last-layer vectors of ``text``'s content words (its keyword terms less ``names``), [CLS]/[SEP] out."""
    from .retrieve import keyword_terms

    keep = set(keyword_terms(text, None)) - names
    at = [i + 1 for i in word_rows(list(pieces[1:-1]), keep)]
    return _unit(rows[at]) if at else np.zeros((0, rows.shape[1]), dtype=np.float32)


def stash(embedder: Any, items: Sequence[Any], own: Sequence[Sequence[tuple[str, float]]],
          got: Mapping[tuple[int, ...], tuple[np.ndarray, np.ndarray]], vectors: np.ndarray) -> None:
    """Hold each item's content token vectors (int8) with the vector they came with, for the write that follows
    in this context (:func:`pending_tokens`). An item whose own views were not all embedded in ``got``'s pass
    gets none. Replaces what an earlier call held."""
    from ..storage.tables.late_tokens import MAX_ROWS

    recent = getattr(embedder, "late_recent", None) if _source(embedder) is not None else None
    tok = _tokenizer(embedder) if got or recent is not None else None
    if tok is None:
        _PENDING.set(None)
        return
    out: dict[str, tuple[bytes, np.ndarray, np.ndarray]] = {}
    for item, views, vec in zip(items, own, vectors):
        parts = []
        names = _names(item)
        for text, _ in views:
            enc = tok.encode(text)
            held = got.get(tuple(enc.ids))
            if held is None and recent is not None:
                held = recent(text)
            if held is None or len(held[0]) != len(enc.ids):
                break
            rows = held[0].astype(np.float32) * held[1][:, None]
            parts.append(content_tokens(text, enc.ids, enc.tokens, rows, names))
        else:
            q, s = quantise(np.concatenate(parts)[:MAX_ROWS] if parts else np.zeros((0, vectors.shape[1])))
            out[item.id] = (np.asarray(vec, dtype=np.float32).tobytes(), q, s)
    _PENDING.set(out)


def pending_tokens(item_id: str, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The (int8 rows, scales) :func:`stash` held for ``item_id`` beside exactly ``vector``; else None."""
    pending = _PENDING.get()
    held = pending.pop(item_id, None) if pending else None  # taken once: nothing outlives its write
    if pending is not None and not pending:
        _PENDING.set(None)
    if held is None or held[0] != np.asarray(vector, dtype=np.float32).tobytes():
        return None
    return held[1], held[2]


# -- the query's token vectors ------------------------------------------------------------------------
#: (scope, model, token ids) -> the pass's int8 rows and their scales, as :func:`seen` held them (a quarter of
#: fp32: at most _QSIZE x 256 tokens x 384 bytes, 25 MB, for the whole process)
_QUERIES: OrderedDict[tuple[str, str, tuple[int, ...]], tuple[np.ndarray, np.ndarray]] = OrderedDict()
_QLOCK = threading.Lock()
_QSIZE = 256


def _model_key(embedder: Any) -> str:
    """Which weights made a token vector (not ``id()``: ids are reused once an embedder is gone)."""
    return f"{getattr(embedder, 'model_dir', '')}:{getattr(embedder, 'backend', '')}"


@contextmanager
def query_pass(embedder: Any) -> Iterator[None]:
    """Around a search's query embedding: hold the token vectors of its pass (per scope and embedder)."""
    with capture() as got:
        yield
    if got and _tokenizer(embedder) is not None:
        with _QLOCK:
            for ids, (q, scale) in got.items():
                key = (cache_scope.current(), _model_key(embedder), ids)
                _QUERIES[key] = (q, scale)
                _QUERIES.move_to_end(key)
            while len(_QUERIES) > _QSIZE:
                _QUERIES.popitem(last=False)


def query_tokens(embedder: Any, text: str) -> tuple[np.ndarray, list[str]] | None:
    """The unit last-layer vectors of ``text``'s tokens ([CLS]/[SEP] out) and its word pieces; None where
    this embedder cannot give them in fp32 in this process."""
    tok = _tokenizer(embedder)
    source = tok is not None and _source(embedder) is not None  # embeds a capture's query in fp32
    if tok is None or not text.strip() or not (source or embedder.query_precision_in_use == "fp32"):
        return None
    enc = tok.encode(text)
    key = (cache_scope.current(), _model_key(embedder), tuple(enc.ids))
    with _QLOCK:
        rows = _QUERIES.get(key)
    if rows is None:  # its vector came from the query cache (another plan embedded it): one pass here
        with query_pass(embedder):
            embedder.embed_query(text) if source else embedder._model.encode([text])
        with _QLOCK:
            rows = _QUERIES.get(key)
        if rows is None:
            return None
    q, scale = rows
    return _unit(q[1:-1].astype(np.float32) * scale[1:-1, None]), list(enc.tokens[1:-1])


# -- the columns --------------------------------------------------------------------------------------
def head_phrase(query: str) -> str:
    """The noun phrase after "what" / "which" (and "kind of", "are some") up to the first auxiliary
    verb or capitalised name; "" when the question starts otherwise.

    Example:
        >>> head_phrase("What activities does Melanie partake in?"), head_phrase("What kind of art does Caroline make?")
        ('activities', 'art')
        >>> head_phrase("What has Melanie painted?")
        ''
    """
    m = _LEAD.match(query)
    if m is None:
        return ""
    out: list[str] = []
    for w in _WORD.findall(query[m.end():]):
        if w.lower() in _STOP_AFTER or (out and w[:1].isupper() and not w.isupper()) or (not out and w.istitle()):
            break
        out.append(w)
        if len(out) == 4:
            break
    return " ".join(out)


_STOP_AFTER = frozenset(
    "is are was were does do did has have had will would can could should might may must".split())
_LEAD = re.compile(
    r"^\s*(?:in\s+)?(?:what|which)\s+(?:(?:kinds?|types?|sorts?)\s+of\s+|are\s+some\s+(?:of\s+the\s+)?|"
    r"(?:is|are|was|were)\s+(?:the\s+)?(?:\w+'s\s+)?)?", re.I)
_WORD = re.compile(r"[\w+'/-]+")


def zscore(x: np.ndarray, on: bool = True) -> np.ndarray:
    """``x`` standardised within one question (zeros when off, constant, or a single value)."""
    if not on or len(x) < 2:
        return np.zeros_like(x)
    sd = float(x.std())
    return (x - x.mean()) / sd if sd > 1e-9 else np.zeros_like(x)


def columns(question: str, names: set[str], qtok: tuple[np.ndarray, list[str]],
            tokens: np.ndarray, sizes: Sequence[int], vecs: np.ndarray) -> np.ndarray:
    """The :data:`NAMES` columns of one question's candidates, z-scored within the question.

    Args:
        question: the query text.
        names: name words of the speakers among the candidates (left out of the question's words).
        qtok: :func:`query_tokens` of the question.
        tokens: the candidates' unit content token vectors, one candidate after another.
        sizes: how many rows of ``tokens`` each candidate has (possibly none).
        vecs: each candidate's stored unit vector (a zero row for one without).

    Returns:
        An array of shape ``(len(sizes), len(NAMES))``.
    """
    from .retrieve import keyword_terms

    qv, pieces = qtok
    n = len(sizes)
    head = head_phrase(question)
    qrows = word_rows(pieces, set(keyword_terms(question, None)) - names)
    hrows = word_rows(pieces, set(keyword_terms(head, None)) if head else set())
    out = np.zeros((n, len(NAMES)))
    if qrows:
        q = qv[qrows]
        maxsim = np.zeros(n)
        if sum(sizes):
            sims = q @ tokens.T  # (query words, every candidate's tokens)
            starts = np.cumsum([0, *[s for s in sizes if s]])[:-1]
            best = np.maximum.reduceat(sims, starts, axis=1).mean(axis=0)
            maxsim[[i for i, s in enumerate(sizes) if s]] = best
        out[:, 0] = zscore(maxsim)
        out[:, 1] = zscore(vecs @ _unit(q.mean(axis=0)))
        out[:, 2] = zscore((vecs @ q.T).max(axis=1))
    if hrows:
        out[:, 3] = zscore(vecs @ _unit(qv[hrows].mean(axis=0)))
    return out


def weight_vector(weights: Mapping[str, float]) -> np.ndarray:
    """``weights`` as one entry per column of :data:`.fusion_features.NAMES` then :data:`NAMES`."""
    from . import fusion_features as F

    unknown = set(weights) - {*F.NAMES, *NAMES}
    if unknown:
        from ..errors import InvalidInputError

        raise InvalidInputError(f"unknown late re-scorer features {sorted(unknown)}")
    return np.array([float(weights.get(n, 0.0)) for n in (*F.NAMES, *NAMES)])


#: ``late`` ranks as ``learned`` unless at least this share of a question's candidates have token vectors
MIN_SHARE = 0.5


def candidate_columns(store: Any, embedder: Any, query: str, cands: Sequence[int],
                      items: Mapping[int, Any]) -> np.ndarray | None:
    """The :data:`NAMES` columns of ``cands`` (rows ``items``, found by the legs under the search's filter),
    or None when the query's token vectors are missing or fewer than :data:`MIN_SHARE` of the candidates
    have theirs. The columns are z-scored among the candidates that have token vectors; the others (an
    organiser's summary, whose vector is made from its members' and never embedded; a memory written before
    this release, by an older service's embedding process or with a caller's vector) get 0 on every late
    column: the question's mean. The fit reads the same function."""
    from ..storage.tables import late_tokens as T

    if not cands or T.table(store) is None:
        return None
    dim = int(embedder.dimension)
    stored = T.read(store, list(cands), {r: it.id for r, it in items.items()}, dim)
    have = [i for i, r in enumerate(cands) if r in stored]
    if not have or len(have) < MIN_SHARE * len(cands):
        return None
    qtok = query_tokens(embedder, query)
    if qtok is None:
        return None
    held = [stored[cands[i]] for i in have]
    sizes = [len(q) for q, _ in held]
    tokens = _unit(np.concatenate([q for q, _ in held]).astype(np.float32) * np.concatenate([s for _, s in held])[:, None])
    rids, matrix = store.vectors_for([cands[i] for i in have])  # unit rows as stored (the dense leg holds them)
    at = {r: i for i, r in enumerate(rids)}
    vecs = np.zeros((len(have), dim), dtype=np.float32)
    found = [j for j, i in enumerate(have) if cands[i] in at]
    if found:
        vecs[found] = matrix[[at[cands[have[j]]] for j in found]]
    out = np.zeros((len(cands), len(NAMES)))
    out[have] = columns(query, speaker_names(items), qtok, tokens, sizes, vecs)
    return out


def scorer(mem: Any, query: str) -> Callable[[Sequence[int], Mapping[int, MemoryItem], np.ndarray], np.ndarray | None]:
    """The logits of ``late`` for :func:`.fusion_learned.rescore` (``late=``), or None per question where any
    input is missing (then the learned weights rank: exactly ``learned``)."""
    from .speaker_legs import asks_for_list

    def score(cands: Sequence[int], items: Mapping[int, MemoryItem], X: np.ndarray) -> np.ndarray | None:
        if not WEIGHTS:
            return None
        cols = candidate_columns(mem.store, mem.embedder, query, cands, items)
        if cols is None:
            return None
        w = weight_vector(LIST_WEIGHTS if asks_for_list(query) else WEIGHTS)
        return np.hstack([X, cols]) @ w  # type: ignore[no-any-return]

    return score


def speaker_names(items: Mapping[int, Any]) -> set[str]:
    """Name words of every speaker among ``items`` (the fit and the engine leave the same words out)."""
    from .retrieve import keyword_terms

    who = {s for it in items.values() if isinstance(s := (it.metadata or {}).get("speaker"), str) and s}
    return {w for s in who for w in keyword_terms(s, None)}

