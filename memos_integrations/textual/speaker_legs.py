"""Legs and orderings for questions about one person's life spread over many sessions (issue 14).

A multi-hop list question ("What activities does Melanie partake in?") is answered by what the
named person said in many sessions, in turns that share no word with the question but the topic.
Measured on LoCoMo dev (``benchmarks/bench_retrieval_misses.py``), two things hold the ten slots
instead: short small-talk turns that carry the person's name ("Glad it helped ya, Melanie!", "Bye
Caroline"), which BM25 ranks high because the name is their one matching word and they are short;
and the person's turns deeper than each leg's pool. The options here (:class:`.retrieve.SearchPlan`,
all off in a plain ``SearchPlan``; ``balanced`` and the presets built on it turn the first two on):

- **the keyword leg without names** (``keyword_unnamed``): for a query that names some of the
  speakers in scope (not all), the keyword leg searches the query's other words; the speaker boost
  still says who. The keyword twin of :mod:`.expand`'s unnamed dense leg (one more BM25 pass);
- **content prior** (``content_prior``): for a question asking for a list (:func:`asks_for_list`),
  a leading dialogue turn with fewer content words than the prior has its score scaled by its share
  of them. A list names things; small talk names none. Memories without a speaker (facts, notes,
  summaries) are never scaled: a short fact is content;
- **speaker legs** (``speaker_dense_weight``, ``speaker_keyword_weight``): for a query that names
  some of the speakers, a dense and a keyword search *restricted* to the turns those speakers said
  (a filter, not a boost), with the names taken out of the query: the dense one uses the query
  vector without the names' directions (:func:`.expand.without_directions`, no new embedding).
  They find the named person's turns deeper than the global pool, but on LoCoMo dev they also
  crowd out single-hop evidence (category 4 -0.02 to -0.03): measured, left off;
- **list spread** (``list_spread``): a list question takes at most this many of its leading hits
  from one session, the rest follow (:func:`.retrieve.cap_per_group`). Measured: a list's evidence
  is often two turns of one session, and the spread lowered categories 1, 3 and 4: left off.

Measured on the LoCoMo dev split (``benchmarks/bench_retrieval.py``), balanced before -> with the
first two: R@10 in 400 words 0.775 -> 0.782, category 1 0.475 -> 0.505, no category lower (on
organised cubes 0.781 -> 0.782, category 1 0.494 -> 0.507, category 4 0.876 -> 0.872: two
questions' worth); the content prior scores alike at 8, 10 and 12 words. Cost: none now that
the named BM25 pass is left out whenever the nameless one replaces it (:func:`keyword_leg`: the
named pass, whose name matches every turn, was the dearer) and a turn's words are held per text.

Every leg reads with the search's filter narrowed to the named speakers, so scope, ``as_of``,
lifecycle and deletion hold as for the plain legs: a second user's memories are never read.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..storage.caches import SPEAKER_MAP_ROWS, held_speakers
from . import dense as D
from . import expand as E
from . import retrieve as R
from . import shape as S
from .entities import entities
from .shape_legs import _said, speaker_filter

if TYPE_CHECKING:
    from ..items import MemoryItem
    from .filters import MemoryFilter
    from .memory import TextualMemory

#: the legs this module adds, by name (``SearchHit.ranks`` shows them)
SPEAKER_DENSE = "speaker_dense"
SPEAKER_KEYWORD = "speaker_keyword"
_NAMING_WINDOW = 20  # the first pass's best hits of each leg whose speakers the query may name
_DENSE_WINDOW = 10  # the dense leg's hits that :func:`keyword_leg` reads (expand's naming window, the smaller)
_MAX_SPEAKERS = 64  # a cube with more speakers than this always runs the named keyword pass
_MAX_SCAN = SPEAKER_MAP_ROWS  # nor does one with more rows (the speakers are read by one scan per commit)


class Deferred(list):  # type: ignore[type-arg]
    """The keyword leg of a search whose named pass :func:`keyword_leg` left out: empty until
    :func:`speaker_legs` replaces it with the nameless pass (or, should that not apply, the named one)."""


def leg_weights(plan: R.SearchPlan) -> dict[str, float]:
    """The fusion weights of the speaker legs."""
    return {SPEAKER_DENSE: plan.speaker_dense_weight, SPEAKER_KEYWORD: plan.speaker_keyword_weight}


def named_subset(
    mem: TextualMemory, query: str, flt: MemoryFilter, scored: Mapping[str, Sequence[tuple[int, float]]],
) -> set[str]:
    """The speakers in the filter's scope that ``query`` names, when someone else in scope speaks too
    (naming everyone narrows nothing): else the empty set.

    Who may be named: the speakers of the first pass's best hits, and the names the query gives
    (:func:`.entities.entities`) that speak in scope; the latter find a person none of whose turns the
    first pass ranked, which is when a leg restricted to them matters most.
    """
    top = list(dict.fromkeys(r for hits in scored.values() for r, _ in hits[:_NAMING_WINDOW]))
    seen = E.speakers_of(mem, top)
    named = R.named_speakers(query, seen)
    # the scope's speakers held between searches (dense.speakers) answer what the two SQL reads below
    # would: a value matches speaker_filter's "$in" when it is that string, "$nin" when it is not a
    # string or none of them (a row without a speaker is someone else)
    scope = D.speakers(mem, flt, _MAX_SPEAKERS)
    for name in R.named_speakers(query, [n for n in entities(query) if n not in seen]):
        if name in scope if scope is not None else mem.store.candidate_rids(speaker_filter(flt, [name]), 1):
            named.add(name)
    if not named:
        return set()
    if scope is not None:
        return named if any(not isinstance(v, str) or v not in named for v in scope) else set()
    return named if mem.store.candidate_rids(_said(flt, {"$nin": sorted(named)}), 1) else set()


def keyword_leg(
    mem: TextualMemory, plan: R.SearchPlan, query: str, terms: Sequence[str], flt: MemoryFilter, pool: int,
    scored: Mapping[str, Sequence[tuple[int, float]]],
) -> list[tuple[int, float]]:
    """The keyword leg's first pass (BM25 of ``terms``), or :class:`Deferred` where its output would be
    thrown away unread: a plan with ``keyword_unnamed`` replaces it by the nameless pass whenever the
    query names some speakers in scope (:func:`named_subset`), and on a LoCoMo cube the named pass
    costs the most (the name matches every turn, so BM25 ranks them all: 0.5 ms of a 1.7 ms search).

    Its one other reader is who is named: the speakers of each leg's best hits that the query names
    (:func:`named_subset`, :func:`.expand.named_in_hits`). Those are the same without it when every
    speaker of the cube whose name the query gives (:func:`~memos_integrations.storage.caches.held_speakers`,
    a superset of any scope's) already speaks in the dense leg's best ``_DENSE_WINDOW``, since a leg
    adds only speakers in scope and :func:`.retrieve.named_speakers` judges each name alone. Then the
    named set is exact, and :func:`speaker_legs` runs the named pass after all if it ends up unused
    (everyone in scope named). Plans with feedback passes read the whole first pass: never deferred.
    """
    if not plan.keyword_unnamed or plan.feedback_docs > 0 or "dense" not in scored:
        return mem.store.keyword_search(terms, flt, pool)
    speakers = held_speakers(mem.store, _MAX_SPEAKERS, _MAX_SCAN)
    named = R.named_speakers(query, speakers) if speakers else set()
    if named:
        top = [r for r, _ in scored["dense"][:_DENSE_WINDOW]]
        if named <= E.speakers_of(mem, top):
            return Deferred()
    return mem.store.keyword_search(terms, flt, pool)


def speaker_legs(
    mem: TextualMemory, plan: R.SearchPlan, query: str, qvec: np.ndarray | None, terms: Sequence[str],
    flt: MemoryFilter, pool: int, scored: Mapping[str, Sequence[tuple[int, float]]],
) -> dict[str, list[tuple[int, float]]]:
    """The speaker legs the plan asks for (module doc), from the first pass's legs ``scored``; each
    reads with ``flt`` narrowed to the named speakers. Empty when the query names nobody (or everybody)."""
    wanted = plan.speaker_dense_weight > 0 or plan.speaker_keyword_weight > 0 or plan.keyword_unnamed
    deferred = isinstance(scored.get("keyword"), Deferred)
    named = named_subset(mem, query, flt, scored) if wanted and scored else set()
    if not named:  # the named pass is the keyword leg after all
        return {"keyword": mem.store.keyword_search(terms, flt, pool)} if deferred else {}
    legs: dict[str, list[tuple[int, float]]] = {}
    drop = {w for n in named for w in R.keyword_terms(n, None)}
    if plan.keyword_unnamed and "keyword" in scored:
        words = [t for t in terms if t not in drop]
        legs["keyword"] = mem.store.keyword_search(words, flt, pool) if words else []
    if plan.speaker_dense_weight > 0 and qvec is not None:
        names = np.stack([E.name_vector(mem, n) for n in sorted(named)])
        legs[SPEAKER_DENSE] = mem._dense(E.without_directions(qvec, names), speaker_filter(flt, sorted(named)), pool)
    if plan.speaker_keyword_weight > 0:
        words = [t for t in terms if t not in drop]
        if words:
            legs[SPEAKER_KEYWORD] = mem.store.keyword_search(words, speaker_filter(flt, sorted(named)), pool)
    return legs


_WH = re.compile(r"^\s*(?:what|which)\s+(?:(?:kinds?|types?|sorts?)\s+of\s+)?([\w+'/-]+)(?:\s+([\w'/-]+))?", re.I)
_LIST_PHRASES = re.compile(
    r"^\s*(?:what|which)\s+(?:kinds?|types?|sorts?)\s+of\b|^\s*what\s+are\s+some\b|^\s*what\s+(?:has|have)\s+\w+"
    r"(?:\s+and\s+\w+)?\s+(?:done|made|bought|read|painted|seen|visited|tried|attended|cooked|written|played)\b",
    re.I)
_VERBS = frozenset("is are was were does do did has have had will would can could should".split())


def _plural(word: str) -> bool:
    w = word.lower().rstrip("+")
    return len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is", "'s")) and w not in _VERBS


def asks_for_list(query: str) -> bool:
    """Whether ``query`` asks for a list of things (several answers, from several places).

    A plural head noun after what / which ("What books has Melanie read?", "Which cities..."),
    "what kinds / types of", "what are some", or "what has X done / made / read ...".

    Example:
        >>> asks_for_list("What books has Melanie read?"), asks_for_list("What kind of art does Caroline make?")
        (True, True)
        >>> asks_for_list("What is Caroline's identity?"), asks_for_list("When did Jon open his studio?")
        (False, False)
        >>> asks_for_list("What has Melanie painted?"), asks_for_list("What does Melanie do to destress?")
        (True, False)
    """
    if _LIST_PHRASES.search(query):
        return True
    m = _WH.match(query)
    if m is None or m.group(1).lower() in _VERBS or m.group(1).istitle():  # "What Jon thinks ...": a name
        return False
    return _plural(m.group(1)) or (m.group(2) is not None and _plural(m.group(2)))


def final_order(
    order: list[int], scores: dict[int, float], rows: Callable[[Sequence[int]], dict[int, MemoryItem]],
    plan: R.SearchPlan, query: str, legs: Mapping[str, Sequence[int]], window: int,
) -> list[int]:
    """The last re-orderings of :meth:`.memory.TextualMemory.search`, in this order: the content
    prior (``content_prior``, for a list question; it also scales ``scores`` in place), the session cap
    (``session_cap``), the list spread (``list_spread``), the session's working memory first
    (``working_first``); each over the first ``window`` hits."""
    if plan.content_prior is not None and order and asks_for_list(query):
        order = content_prior(order, scores, rows, plan.content_prior, window)
    if plan.session_cap is not None and order:
        order = S.cap_sessions(order, rows, plan.session_cap, window)
    order = spread_lists(order, rows, plan, query, window)
    if plan.working_first and "working" in legs:
        order = R.working_first(order, set(legs["working"]), plan.working_first)
    return order


def content_words(text: str, names: set[str]) -> int:
    """How many content words ``text`` holds (:func:`.retrieve.keyword_terms`, repeats counted), not
    counting ``names`` (lower case). Below: bye, i'm, take, care.

    Example:
        >>> content_words("Bye Caroline. I'm here for you. Take care of yourself.", {"caroline"})
        4
    """
    return sum(1 for w in (_words(text) if len(text) <= _WORDS_HELD_CHARS else R.keyword_terms(text, None, unique=False))
               if w not in names)


_WORDS_HELD_CHARS = 2_000  # longer texts are rare among dialogue turns; their words are not held
#: texts whose words are held, for every cube of the process: a service searches many cubes (50 users' LoCoMo
#: conversations touch ~300 distinct turns each in list questions' windows), so the bound is sized for ~50 of
#: them, not one (4096 thrashed past ~10). An entry is ~0.75 KB (the text, its word tuple): at most ~12 MB.
#: A miss costs 7 us per turn (keyword_terms), ~0.3 ms per list question whose window misses entirely
_WORDS_HELD = 16_384


@functools.lru_cache(maxsize=_WORDS_HELD)
def _words(text: str) -> tuple[str, ...]:
    """A text's content words with repeats (:func:`.retrieve.keyword_terms`), held per text: the
    content prior reads the same turns' words in search after search (a pure function: never stale)."""
    return tuple(R.keyword_terms(text, None, unique=False))


def content_prior(
    order: list[int], scores: dict[int, float], rows: Callable[[Sequence[int]], dict[int, MemoryItem]], words: int,
    window: int,
) -> list[int]:
    """Scale the score of each of the first ``window`` hits that a speaker said (a dialogue turn) with
    fewer than ``words`` content words (the speakers' names left out) by its share of them, and
    re-sort those hits; the rest follow. A memory without a speaker (a fact, a note, a summary) is
    never scaled: small talk is a turn of a conversation; a short fact is content."""
    head = order[:window]
    items = rows(head)
    names = {w for it in items.values() if isinstance(s := it.metadata.get("speaker"), str)
             for w in R.keyword_terms(s, None)}
    for rid, it in items.items():
        if not it.metadata.get("speaker"):
            continue
        n = content_words(it.text, names)
        if n < words:
            scores[rid] *= n / words
    return sorted(head, key=lambda r: -scores[r]) + order[window:]


def spread_lists(
    order: list[int], rows: Callable[[Sequence[int]], dict[int, MemoryItem]], plan: R.SearchPlan, query: str,
    window: int,
) -> list[int]:
    """For a list question (:func:`asks_for_list`), at most ``plan.list_spread`` of the first
    ``window`` hits from one session lead; the rest follow in order. Other questions: unchanged."""
    if plan.list_spread is None or not order or not asks_for_list(query):
        return order
    head = order[:window]
    items = rows(head)
    spread = R.cap_per_group(head, {rid: it.session_id for rid, it in items.items()}, plan.list_spread)
    return spread + order[window:]
