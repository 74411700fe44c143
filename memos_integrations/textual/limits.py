"""Chat-sized input: reducing long queries and indexing long messages by parts. Pure functions.

A chat turn can be a pasted 40,000-character log, and an agent may search with that turn as the
query. Neither may break the run:

* a **long query** is reduced before it is searched (:func:`reduce_query`): its last part (where a
  question usually is) and its most distinctive words (the rarest in the cube) are kept, up to about
  what the embedder reads and what the keyword index ranks cheaply;
* a **long message** (or a ``cube.add(memory=...)`` text) is stored whole, and also indexed as
  *parts* (:func:`part_items`): ``chunk`` items of about what the embedder reads, each pointing at the
  message (``parent_id``, ``sources`` and ``metadata["part_of"]``), each searchable. Search returns at
  most one entry per message (its best part or the message itself); ``cube.get(part_of)`` gives the
  whole text back.

``TextualMemory`` does the I/O (term counts, writes); everything here is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..items import Kind, MemoryItem
from .retrieve import keyword_terms

#: Metadata keys a part carries (besides a copy of its message's metadata).
PART_OF, PART, PARTS = "part_of", "part", "parts"

#: Words of a long query that are looked up in the cube's term counts, at most.
MAX_CANDIDATE_TERMS = 256

#: What a long query's dense text is cut to: the embedder reads a text's first 256 tokens (MiniLM),
#: and a log tokenises at about 3 characters a token, so a longer tail would push the question out.
DENSE_CHARS = 800


@dataclass(frozen=True)
class ReducedQuery:
    """What a long query is searched as: ``text`` for the dense leg, ``terms`` for the keyword leg."""

    text: str
    terms: list[str]


def tail(text: str, max_chars: int) -> str:
    """The last ``max_chars`` characters of ``text``, starting at a word boundary where one is near.

    Example:
        >>> tail("first words then the question at the end", 20)
        'question at the end'
    """
    if len(text) <= max_chars:
        return text
    cut = text[-max_chars:]
    space = re.search(r"\s", cut[: max(1, max_chars // 4)])  # do not start mid-word if avoidable
    return cut[space.end():] if space else cut


def candidate_terms(query: str, max_chars: int, limit: int = MAX_CANDIDATE_TERMS) -> list[str]:
    """Which words of a long ``query`` are worth a term count: every content word of its tail, then
    the words the query uses least often (a pasted log repeats its boilerplate), longest first,
    words with digits (sequence numbers, hashes: a log's noise) last.

    Example:
        >>> candidate_terms("ERROR retry ERROR retry ERROR kafka-broker-7 down. Why is Porto slow?", 20, 4)
        ['porto', 'slow', 'broker', 'kafka']
    """
    end = keyword_terms(tail(query, max_chars), limit=None)
    seen = set(end)
    counts: dict[str, int] = {}
    for w in keyword_terms(query, limit=None, unique=False):
        if w not in seen:
            counts[w] = counts.get(w, 0) + 1
    rest = sorted(counts, key=lambda w: (any(c.isdigit() for c in w), counts[w], -len(w)))
    return (end + rest)[:limit]


def reduce_query(query: str, counts: Mapping[str, int], max_chars: int, max_terms: int = 32) -> ReducedQuery:
    """Reduce a long query to its last ``max_chars`` characters and its most distinctive terms.

    ``counts`` is how many indexed memories contain each candidate term (from
    :func:`candidate_terms`); a term no memory contains cannot help and is dropped. Terms of the
    query's tail are kept (half the ``max_terms`` at most), then the rarest of the rest, rarest first. The dense
    text is the tail (three quarters of ``max_chars`` at most) followed by the rarest terms from
    before it: an embedder that truncates drops those words, never the question.

    Example:
        >>> q = "log line 1 flux capacitor overheated\\n" + "log line ok\\n" * 500 + "what broke?"
        >>> r = reduce_query(q, {"flux": 1, "capacitor": 2, "log": 900, "line": 900, "broke": 3}, 40)
        >>> r.terms
        ['flux', 'capacitor', 'broke', 'line', 'log']
        >>> r.text
        'ok\\nlog line ok\\nwhat broke?\\nflux'
    """
    end = tail(query, max_chars)
    end_terms = {t: n for n, t in enumerate(keyword_terms(end, limit=None))}
    known = {t: n for t, n in counts.items() if n > 0}
    # of the tail's words, the rarest, and of equally rare ones the last (the question is at the end)
    first = sorted((t for t in known if t in end_terms), key=lambda t: (known[t], -end_terms[t]))[: max_terms // 2]
    others = sorted((t for t in known if t not in end_terms), key=lambda t: known[t])
    terms = sorted(first + others[: max_terms - len(first)], key=lambda t: known[t])
    text = tail(query, max_chars - max_chars // 4)
    words: list[str] = []
    used = len(text)
    for t in (t for t in others if t in terms):  # the rest of the dense text names the rarest words
        if used + len(t) + 1 > max_chars or len(words) >= max_terms // 2:
            break
        words.append(t)
        used += len(t) + 1
    if words:
        text += "\n" + " ".join(words)
    return ReducedQuery(text, terms)


def split_spans(text: str, size: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Cut ``text`` into ``(start, end)`` spans of at most ``size`` characters that cover it, each
    ending at a line or word break where one is in its last quarter, consecutive spans sharing about
    ``overlap`` characters (so a sentence cut at a border is whole in one of them).

    Example:
        >>> text = "alpha beta gamma delta epsilon"
        >>> [text[a:b] for a, b in split_spans(text, 12)]
        ['alpha beta ', 'gamma delta ', 'epsilon']
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError("split_spans needs size >= 1 and 0 <= overlap < size")
    spans: list[tuple[int, int]] = []
    start, n = 0, len(text)
    while start < n:
        end = min(start + size, n)
        if end < n:
            window = text[start + (3 * size) // 4 : end]
            brk = max(window.rfind("\n"), -1)
            if brk < 0:
                brk = max(window.rfind(" "), window.rfind("\t"))
            if brk >= 0:
                end = start + (3 * size) // 4 + brk + 1
        spans.append((start, end))
        if end >= n:
            break
        nxt = end - overlap
        if overlap:  # start the overlap at a word, or not at all
            space = text.find(" ", nxt, end)
            nxt = space + 1 if space >= 0 else end
        start = max(nxt, start + 1)
    return spans


def part_id(item_id: str, n: int) -> str:
    """The id of part ``n`` of an item: stable, so adding the same message again versions its parts."""
    return f"{item_id}#part{n}"


def part_items(item: MemoryItem, size: int) -> list[MemoryItem]:
    """The parts a long item is indexed by: ``chunk`` items with its scope, time, tags and metadata,
    ``parent_id`` and ``sources`` set to its id, and ``metadata`` recording which part of how many
    and where it starts and ends in the whole text.

    Example:
        >>> msg = MemoryItem(text="one two three four five six seven", id="m1", kind=Kind.MESSAGE, user_id="u")
        >>> [(p.id, p.text, p.metadata["part_of"], p.metadata["start"]) for p in part_items(msg, 16)]
        [('m1#part0', 'one two three ', 'm1', 0), ('m1#part1', 'four five six ', 'm1', 14), ('m1#part2', 'seven', 'm1', 28)]
    """
    spans = split_spans(item.text, size, overlap=size // 8)
    return [
        MemoryItem(
            text=item.text[a:b], id=part_id(item.id, n), kind=Kind.CHUNK, user_id=item.user_id,
            agent_id=item.agent_id, session_id=item.session_id, cube_id=item.cube_id, event_time=item.event_time,
            valid_from=item.valid_from, valid_to=item.valid_to, sources=[item.id], created_by=item.created_by,
            method=item.method, confidence=item.confidence, tags=list(item.tags), parent_id=item.id,
            metadata={**item.metadata, PART_OF: item.id, PART: n, PARTS: len(spans), "start": a, "end": b},
        )
        for n, (a, b) in enumerate(spans)
    ]


def root_of(item: MemoryItem) -> str:
    """The id a search hit stands for: a part's message, or the item itself."""
    owner = item.metadata.get(PART_OF) if item.kind == Kind.CHUNK else None
    return owner if isinstance(owner, str) and owner == item.parent_id else item.id
