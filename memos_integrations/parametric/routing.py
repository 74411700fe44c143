"""Adapter routing by relevance: apply a user's adapter only to requests about what it holds.

Part of parametric memory (``parametric/``). An adapter distilled from a user's memories knows those
memories and, however carefully it was trained, changes some answers to requests that have nothing
to do with them (a control question answered in other words, a user fact leaking into a general
answer). :class:`AdapterRouter` decides per request: the request is split into sentences, each is
embedded, and the adapter applies when some sentence is at least ``threshold`` cosine-similar to one
of the adapter's *keys* (the texts it was distilled from, kept in its manifest as ``route_texts``).
Otherwise the request runs on the bare base model, exactly as a user without an adapter.

Why embeddings of the source memories rather than the adapter's own likelihood gain: they cost one
query embedding (which retrieval computes anyway) instead of two forward passes, and they do not
depend on how well the adapter learned. A mixed request ("What is the capital of France, and what did
Maya call her dog?") routes to the adapter because one of its sentences is about the user.

The threshold is chosen by :func:`calibrate` on development requests: questions about the user's
memories (positives) and general requests (negatives), never the evaluation questions. An adapter
whose manifest has no keys (written before routing existed) always applies, as before.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidInputError

#: MiniLM cosine; bench_parametric calibrates 0.473 on its dev split (training questions vs general dev requests)
DEFAULT_THRESHOLD = 0.47
_SENTENCE = re.compile(r"(?<=[.?!;])\s+|\n+")


MAX_SENTENCES = 64  # a huge request costs at most this many embeddings; later sentences are not read


def sentences(text: str) -> list[str]:
    """The request's first :data:`MAX_SENTENCES` sentences (the whole text when it has one), blank ones
    left out, each cut to 2,000 characters (the embedder reads fewer tokens anyway)."""
    out: list[str] = []
    for part in _SENTENCE.split(text or ""):
        if part.strip():
            out.append(part.strip()[:2000])
            if len(out) == MAX_SENTENCES:
                break
    return out


class AdapterRouter:
    """Per-request decision: does a user's adapter apply?

    Example::

        router = AdapterRouter(cube.embedder)              # DEFAULT_THRESHOLD
        cube.para_mem.use_router(router)                   # LocalRuntime passes each request's text
        router.score(["Maya's dog is called Biscuit."], "What did Maya call her dog?")  # ~0.7
    """

    def __init__(self, embedder: Any, threshold: float = DEFAULT_THRESHOLD, *, max_keys: int = 10_000) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise InvalidInputError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        if not hasattr(embedder, "embed_documents"):
            raise InvalidInputError("AdapterRouter needs an embedder with embed_documents (e.g. cube.embedder)")
        self.embedder = embedder
        self.threshold = float(threshold)
        self.max_keys = max_keys
        self._keys: dict[str, Any] = {}  # adapter weights digest -> normalised key matrix
        self._lock = threading.Lock()

    def _matrix(self, texts: Sequence[str]) -> Any:
        import numpy as np

        vecs = np.asarray(self.embedder.embed_documents(list(texts)), dtype=np.float32)
        if vecs.ndim != 2 or len(vecs) != len(texts):
            raise InvalidInputError(f"the embedder returned shape {vecs.shape} for {len(texts)} texts")
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.where(norms == 0, 1, norms)

    def keys(self, cache_key: str, texts: Sequence[str]) -> Any:
        """The key vectors of one adapter, embedded once per ``cache_key`` (its weights digest)."""
        with self._lock:
            hit = self._keys.get(cache_key)
        if hit is not None:
            return hit
        matrix = self._matrix([t for t in texts if t and t.strip()][: self.max_keys])
        with self._lock:
            if len(self._keys) > 256:  # adapters come and go; keep the cache bounded
                self._keys.pop(next(iter(self._keys)))
            self._keys[cache_key] = matrix
        return matrix

    def score(self, keys: Sequence[str], request: str, *, cache_key: str | None = None) -> float:
        """Highest cosine similarity between a sentence of ``request`` and a key text."""
        parts = sentences(request)
        if not parts or not keys:
            return -1.0
        key_vecs = self.keys(cache_key, keys) if cache_key is not None else self._matrix(keys)
        if len(key_vecs) == 0:
            return -1.0
        return float((self._matrix(parts) @ key_vecs.T).max())

    def applies(self, manifest: Any, request: str | None, user_id: str | None = None) -> bool:
        """Whether the adapter described by ``manifest`` should run ``request`` (sent by ``user_id``).

        No request text (a batch call, a preload) and an adapter without keys keep today's
        behaviour: the adapter applies. The adapter's own user speaks of themselves in the first
        person while their memories name them ("Am I allergic?" against "Maya is allergic to
        peanuts.", 0.39): when their request falls short it is scored again without its first
        person, against the keys without their name ("Am allergic?" against "is allergic to
        peanuts.", 0.67). Reading "I" as the name instead would lift any first-person request
        ("Tell me a joke." 0.16 -> 0.56): the name alone is close to every key.
        """
        keys = list(getattr(manifest, "route_texts", None) or [])
        if request is None or not keys:
            return True
        cache = f"{manifest.name}:{manifest.weights_sha256}"
        if self.score(keys, request, cache_key=cache) >= self.threshold:
            return True
        owner = getattr(manifest, "user_id", None)
        plain = without_first_person(request)
        if owner is None or owner != user_id or plain == request:  # not the owner speaking of themselves
            return False
        name = name_in(keys, owner)
        if name is None:
            return False
        unnamed = [without_name(k, name) for k in keys]
        return self.score(unnamed, plain, cache_key=cache + ":unnamed") >= self.threshold


def name_in(texts: Sequence[str], user_id: str) -> str | None:
    """How ``texts`` write the user's name: the first capitalised whole word equal to ``user_id`` up to
    case, or None (a user id such as "a" or "dog" is not taken for a name in "is a dog")."""
    pattern = re.compile(r"(?<![\w])" + re.escape(user_id) + r"(?![\w])", re.IGNORECASE)
    for text in texts[:1000]:
        for found in pattern.finditer(text):
            if found.group(0)[:1].isupper():
                return found.group(0)
    return None


_FIRST_PERSON = re.compile(r"\b(?:I|I['\u2019](?:m|ve|ll|d)|me|my|mine|myself)(?![\w'\u2019])\s*", re.IGNORECASE)


def without_name(text: str, name: str) -> str:
    """``text`` without the whole word ``name`` (and its possessive)."""
    return re.sub(r"(?<![\w])" + re.escape(name) + r"(?:['\u2019]s)?(?![\w])\s*", "", text)


def without_first_person(request: str) -> str:
    """``request`` without I, me, my, mine, myself.

    Example:
        >>> without_first_person("Am I allergic to anything? What is my dog's breed?")
        "Am allergic to anything? What is dog's breed?"
    """
    return _FIRST_PERSON.sub("", request)


def calibrate(router: AdapterRouter, keys: Sequence[str], positives: Sequence[str],
              negatives: Sequence[str]) -> tuple[float, float]:
    """The threshold that best separates ``positives`` (requests about the keys) from ``negatives``.

    Args:
        router: supplies the embedder.
        keys: the adapter's source texts.
        positives: development requests that should reach the adapter.
        negatives: development requests that should not.

    Returns:
        ``(threshold, accuracy)``: the midpoint between neighbouring scores with the highest
        accuracy on the dev requests (ties: the widest gap), and that accuracy.

    Raises:
        InvalidInputError: no positives or no negatives.
    """
    if not positives or not negatives:
        raise InvalidInputError("calibration needs positive and negative development requests")
    scored = sorted([(router.score(keys, q), 1) for q in positives] + [(router.score(keys, q), 0) for q in negatives])
    best = (-1.0, -1.0, 0.0)  # accuracy, gap, threshold
    n = len(scored)
    for i in range(n + 1):  # threshold between scored[i-1] and scored[i]: positives at index >= i
        lo = scored[i - 1][0] if i > 0 else scored[0][0] - 0.05
        hi = scored[i][0] if i < n else scored[-1][0] + 0.05
        correct = sum(1 for j, (_, y) in enumerate(scored) if (j >= i) == bool(y))
        cand = (correct / n, hi - lo, (lo + hi) / 2)
        if cand[:2] > best[:2]:
            best = cand
    return round(best[2], 3), best[0]


__all__ = ["DEFAULT_THRESHOLD", "MAX_SENTENCES", "AdapterRouter", "calibrate", "name_in", "sentences", "without_first_person", "without_name"]
