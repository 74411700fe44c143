"""One forward pass for a search's query and the text its plan embeds next (issue 14: deep and multihop latency).

Why: the ``deep`` and ``multihop`` presets embed the question twice, as asked and without the speakers
it names (:mod:`.expand`, ``unnamed_mode="embed"``). MiniLM on a CPU is bound by reading its weights
(about 40 MB of linear layers per pass), not by a question's dozen tokens: the second pass cost as much
as the first (8-9 ms of a 26 ms p95 search), and two texts in one pass cost little more than one.

What: before the query is embedded, :func:`speculate` guesses the second text from the speakers in the
search's scope that the question names (the first pass can only narrow them: a name is judged alone,
:func:`.retrieve.named_speakers`); :func:`query_vector` embeds both in one pass and hands the second
vector to the expansion leg by its exact text (:func:`.expand.expansion_legs` looks it up, and embeds
whatever text it really needs when the guess was wrong). Nothing is ranked differently: each row is
bit for bit what ``embed_query`` gives that text alone: the shared pass is the model's own exact fp32
pass (:mod:`.fp32_exact`: every linear layer on the texts' packed tokens, whose rows do not depend on
the others, and attention text by text), which a one-text ``embed_query`` runs too (:func:`together`;
``tests/unit/test_embed_ahead.py`` checks the bits). Where that cannot be promised (another embedder or backend, or torch running on more
than one thread, where a product's rounding depends on how many rows it splits) each text is embedded
alone, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import dense as D
from . import retrieve as R

if TYPE_CHECKING:
    from .filters import MemoryFilter
    from .memory import TextualMemory

_MAX_SPEAKERS = 64  # a scope with more speakers than this is not speculated on (as speaker_legs)


def speculate(mem: TextualMemory, plan: R.SearchPlan, query: str, flt: MemoryFilter) -> str | None:
    """The text :func:`.expand.expansion_legs` will embed for ``query`` (without the speakers it names)
    if the first pass finds every speaker of the scope that the query names; None when the plan embeds
    no second text, the query names nobody in scope, or the scope's speakers cannot be held."""
    from .expand import unnamed

    if plan.unnamed_weight <= 0 or plan.unnamed_mode != "embed" or R._WHEN.match(query):
        return None
    scope = D.speakers(mem, flt, _MAX_SPEAKERS)
    if not scope:
        return None
    named = R.named_speakers(query, [s for s in scope if isinstance(s, str) and s])
    if not named:
        return None
    text = unnamed(query, named)
    return text if R.keyword_terms(text.replace("they", "")) else None


def query_vector(mem: TextualMemory, plan: R.SearchPlan, query: str, flt: MemoryFilter) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``embed_query(query)``, and by text the vectors of the texts the plan embeds next (:func:`speculate`)
    where they came in the same pass; both enter the embedder's query cache as ``embed_query`` would put them."""
    embedder = mem.embedder
    ahead = speculate(mem, plan, query, flt)
    cache = getattr(embedder, "_queries", None)  # MiniLMEmbedder's (per user scope, see .cache_scope)
    if ahead is None or ahead == query or cache is None or pair_model(embedder) is None:
        return embedder.embed_query(query), {}
    extra: dict[str, np.ndarray] = {}

    def both(text: str) -> np.ndarray:
        vectors = together(embedder, [text, ahead])
        extra[ahead] = vectors[1]
        return vectors[0]

    vec = cache.get(query, both)  # a query embedded before embeds nothing now, as embed_query would
    if extra:
        cache.get(ahead, lambda _: extra[ahead])
    return vec, extra


def pair_model(embedder: Any) -> Any:
    """What :func:`together` runs for ``embedder``: ``"int8"`` (its ``embed_queries`` rows never depend on
    their batch: int8 attention runs text by text), the torch model (fp32), or None (embed one by one)."""
    from .embed import MiniLMEmbedder

    if type(embedder) is not MiniLMEmbedder or "embed_query" in vars(embedder):  # not its own embed_query
        return None
    if embedder.query_precision_in_use == "int8":
        return "int8"
    from .minilm import TorchBert

    model = embedder._model
    # one torch thread: a GEMM's rows then do not depend on how many there are (measured: all 762 LoCoMo dev
    # question pairs bit-identical); with more, the work is split by the row count and ~30% differ
    # and the exact fp32 pass (textual/fp32_exact.py: packed tokens, attention text by text), whose rows are
    # each text's own; the padded reference pass (fp32_exact off) embeds one text at a time
    return model if (type(model) is TorchBert and model.fp32_exact and model.torch.get_num_threads() == 1) else None


def together(embedder: Any, texts: Sequence[str]) -> np.ndarray:
    """Each of ``texts``' ``embed_query`` vectors, bit for bit, from one forward pass (module docstring);
    one pass per text where :func:`pair_model` says none can be shared, a text is shorter than
    ``_MIN_TOKENS``, or this machine's products failed the check (:func:`_checked`)."""
    model = pair_model(embedder)
    if model == "int8":
        return embedder.embed_queries(list(texts))  # type: ignore[no-any-return]
    ids = None if model is None else [e.ids for e in model.tokenizer.encode_batch(list(texts))]
    if ids is None or min(map(len, ids)) < _MIN_TOKENS or not _checked(model):
        return np.stack([np.asarray(embedder.embed_query(t), dtype=np.float32) for t in texts])
    return _shared_pass(model, ids)


#: a text of fewer tokens (one word: [CLS] word [SEP]) is embedded alone: products of 1-3 rows take another
#: kernel on this CPU (oneDNN), whose rounding differs from the same rows inside a larger product
_MIN_TOKENS = 4
_CHECK = ["What did Caroline research?", "What did they research?", "Where has Melanie camped with her kids?",
          "pottery class", "When did Gina open her online clothing store, and who helped her?", "why " * 60]
_checked_models: dict[int, bool] = {}
_log = logging.getLogger(__name__)


def _checked(model: Any) -> bool:
    """Whether this model's shared pass gave each check text's one-text vector bit for bit (once per
    model, so once per process): the row independence of a product is this CPU's library's, not a
    promise; where it fails each text is embedded alone (logged once)."""
    ok = _checked_models.get(id(model))
    if ok is None:
        ids = [e.ids for e in model.tokenizer.encode_batch(_CHECK)]
        one = np.concatenate([model.encode([t]) for t in _CHECK])  # what embed_query computes (fp32)
        ok = all(np.array_equal(_shared_pass(model, ids[k : k + 2]), one[k : k + 2]) for k in range(0, len(ids), 2))
        ok = ok and np.array_equal(_shared_pass(model, ids), one)
        if not ok:
            _log.warning("MiniLM's products round differently with more rows on this CPU: deep and multihop "
                         "searches embed their two texts in two passes (the same vectors, slower)")
        _checked_models[id(model)] = ok
    return ok


def _shared_pass(model: Any, ids: list[list[int]]) -> np.ndarray:
    from .minilm import _one_blas_thread

    with model.torch.inference_mode(), _one_blas_thread(len(ids) * max(len(i) for i in ids)):
        return model._forward(ids)  # type: ignore[no-any-return]  # fp32_exact.py: each row its text's alone
