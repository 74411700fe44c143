"""Relation links between a user's memories, extractive and deterministic: same entity, conflict.

- **Entities** are capitalised names (``Maya``, ``New York``, ``LGBTQ``): a capitalised word run
  that is not at the start of a sentence, or one at the start that the same user's memories also
  name mid-sentence. Common sentence openers (``I``, ``The``, weekdays...) are never entities.
- **same_entity**: each memory naming an entity links to the previous memory (in time order)
  naming it: a chain per entity, so ``n`` mentions cost ``n - 1`` edges and a two-hop walk still
  reaches the neighbours. An entity named in more than ``max_entity_share`` of a large user's
  memories (the user's own name in a chat) links nothing: it relates everything, so nothing.
- **conflict**: two memories stating the same attribute of the same entity (``Maya's dog is a
  beagle`` / ``Maya's dog is a poodle``; ``X lives in Y``, ``X works at Y``, ``X is from Y``) with
  different values. First-person statements count too (:mod:`.statements`, the definition the
  profile keys by: ``I live in Lisbon`` / ``I live in Porto``, ``My favourite colour is ...``): their
  entity is the memory's speaker (``metadata["speaker"]``, so ``Maya: I live in Porto`` contradicts
  ``Maya lives in Lisbon``), else the user (``self``). Values agree when one goes on from the other
  (``Lisbon`` / ``Lisbon with my wife``). The newer links to the older one it contradicts, flagged
  (``status: "flagged"``) unless a reader resolves it. :func:`flagged_conflicts` reads them back
  for a page of search hits (two queries, not one per hit) so a face can tell the model.

The organiser computes the whole wanted edge set of a user (cheap: regular expressions over the
texts) and writes only the difference with what is stored, so a rerun writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..items import LIVE_STATES, Edge, MemoryItem, utcnow
from ..prompting import memory_text
from ..storage.graph import CONFLICT, SAME_ENTITY
from .statements import first_person_statements, same_value, value_of

_NAME = re.compile(r"\b[A-Z][\w'’-]*(?:\s+(?:of\s+|the\s+)?[A-Z][\w'’-]*)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\"“]\s*|\n\s*)$")
_STOP = frozenset(
    """I I'm I've I'll I'd Im Ive The A An This That These Those It It's Its He She We They You Your My Our Their
    His Her Hers Yes No Oh Ok Okay Hey Hi Hello Wow Thanks Thank Sure Well So But And Or If When What Why How Where
    Who Which There Here Also Just Not Do Does Did Have Has Had Be Is Are Was Were Will Would Can Could Should Let
    Maybe Great Good Nice Cool Awesome Love Sounds Really That's What's It’s I’m I’ve That’s Definitely Totally
    Absolutely Glad Congrats Congratulations Haha Lol Yeah Yep Nope Hmm Sorry Please Thats Anyway Plus Even Still
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday Today Tomorrow Yesterday Last Next After Before
    Since Until During Once Then Now Lately Recently Speaking Actually Honestly Anyways Right Absolutely""".split())
_VALUE = r"(?P<val>[^.,;!?\n]{1,60})"
_ENT = r"(?P<ent>[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)?)"
_ATTRIBUTES = (
    re.compile(_ENT + r"['’]s\s+(?P<attr>(?:favou?rite\s+)?[a-z]+(?:\s+[a-z]+)?)\s+(?:is|was)\s+" + _VALUE),
    re.compile(r"[Tt]he\s+(?P<attr>(?:favou?rite\s+)?[a-z]+)\s+of\s+" + _ENT + r"\s+(?:is|was)\s+" + _VALUE),
    re.compile(_ENT + r"\s+(?P<attr>lives in|works at|works for|works as|is from|is married to|is allergic to)\s+" + _VALUE),
)


@dataclass(frozen=True)
class Attribute:
    """One extractive statement ``entity``'s ``attribute`` is ``value`` (all lower-cased but entity)."""

    entity: str
    attribute: str
    value: str

    @property
    def key(self) -> str:
        return f"{self.entity.lower()}|{self.attribute}"


def names(text: str) -> list[tuple[str, bool]]:
    """Capitalised word runs of ``text`` as (name, at the start of a sentence), stop words dropped."""
    out: list[tuple[str, bool]] = []
    for m in _NAME.finditer(text):
        words = [w for w in re.split(r"\s+", m.group(0).strip("'’-")) if w]
        while words and words[0] in _STOP:
            words.pop(0)
        while words and words[-1] in ("of", "the"):
            words.pop()
        if not words:
            continue
        name = " ".join(words)
        name = re.sub(r"['’]s$", "", name)
        if len(name) < 2 or name in _STOP:
            continue
        start = _at_sentence_start(text, m.start()) and words[0] == m.group(0).split()[0]
        out.append((name, start))
    return out


def _at_sentence_start(text: str, at: int) -> bool:
    """Whether ``text[at:]`` opens a sentence (what ``_SENTENCE_START`` says of ``text[:at]``), reading back
    only over the whitespace before ``at``: searching the whole prefix for every name was quadratic (a
    100 KB memory took 21 s, a 1 MB one over half an hour)."""
    if at == 0:
        return True
    i = at - 1
    newline = False
    while i >= 0 and text[i].isspace():
        newline = newline or text[i] == "\n"
        i -= 1
    return newline or (i >= 0 and text[i] in '.!?:;"“')


def entities_of(items: Sequence[MemoryItem]) -> dict[str, list[str]]:
    """item id -> the entities it names (sorted, unique), decided over the whole list (see module doc)."""
    found = {it.id: names(it.text) for it in items}
    mid = {n for ns in found.values() for n, start in ns if not start}
    return {i: sorted({n for n, start in ns if not start or n in mid}) for i, ns in found.items()}


def attributes(text: str) -> list[Attribute]:
    """The attribute statements of ``text`` (see module doc)."""
    out: list[Attribute] = []
    for pattern in _ATTRIBUTES:
        for m in pattern.finditer(text):
            ent = m.group("ent")
            if ent.split()[0] in _STOP:
                continue
            value = value_of(m.group("val"))
            if not value:
                continue
            out.append(Attribute(ent, m.group("attr").lower(), value))
    return out


def statements(item: MemoryItem) -> list[Attribute]:
    """Every attribute ``item`` states: third person (:func:`attributes`) and first person, whose entity is
    the item's speaker, else ``self`` (the user)."""
    text = memory_text(item)
    found = [Attribute(a.entity, _spelling(a.attribute), a.value) for a in attributes(text)]
    speaker = item.metadata.get("speaker")
    who = speaker.strip() if isinstance(speaker, str) and speaker.strip() else "self"
    found.extend(Attribute(who, _spelling(s.attribute), s.value) for s in first_person_statements(text))
    return found


def _spelling(attribute: str) -> str:
    return re.sub(r"\bfavorite\b", "favourite", attribute)


def wanted_links(items: Sequence[MemoryItem], max_entity_share: float = 0.2) -> dict[tuple[str, str, str], Edge]:
    """The same_entity and conflict edges ``items`` (one user's, in time order) should have, by (src, type, dst)."""
    edges: dict[tuple[str, str, str], Edge] = {}
    ents = entities_of(items)
    mentions: dict[str, list[str]] = {}
    for it in items:
        for name in ents[it.id]:
            mentions.setdefault(name, []).append(it.id)
    cap = max(50, int(max_entity_share * len(items)))
    for name in sorted(mentions):
        ids = mentions[name]
        if len(ids) > cap:
            continue
        for older, newer in zip(ids, ids[1:]):
            edges.setdefault((newer, SAME_ENTITY, older), Edge(newer, older, SAME_ENTITY, 1.0, {"entity": name}))
    # per attribute key: each distinct value -> the latest (id, statement) giving it, oldest value first; a
    # statement walks the distinct values newest first (the same value said 5,000 times is one entry, not
    # 5,000 to compare: that walk was quadratic)
    seen: dict[str, dict[str, tuple[str, Attribute]]] = {}
    for it in items:
        for attr in statements(it):
            earlier = seen.setdefault(attr.key, {})
            for other_id, other in reversed(earlier.values()):
                if other_id != it.id and not same_value(other.value, attr.value):
                    edges[(it.id, CONFLICT, other_id)] = Edge(it.id, other_id, CONFLICT, 1.0, {
                        "entity": attr.entity, "attribute": attr.attribute,
                        "values": [attr.value, other.value], "status": "flagged"})
                    break
            earlier.pop(attr.value, None)
            earlier[attr.value] = (it.id, attr)
    return edges


@dataclass(frozen=True)
class Conflict:
    """A flagged conflict of one memory: the other memory, and what the two disagree about."""

    other_id: str
    other_text: str
    entity: str
    attribute: str

    def short(self, chars: int = 80) -> str:
        text = re.sub(r"\s+", " ", self.other_text).strip()
        return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def flagged_conflicts(cube: Any, items: Sequence[MemoryItem]) -> dict[str, list[Conflict]]:
    """item id -> the flagged conflicts of ``items`` (search hits), read in one batch: one graph query for
    the conflict links of all of them, one store read for the other memories.

    Only a conflict whose other memory is live (not archived, deleted or superseded), of the same
    user as the hit and of its agent (or of none) is returned: a link never shows a memory of another
    user, nor one another agent of the user keeps to itself; and only while the two texts as they read now
    still disagree on the link's attribute (one edited since the link was written: no note). A cube
    without a local graph has none to show here: ``{}`` (a remote cube answers :func:`conflict_notes`
    through its own ``conflict_notes``, computed by the service as this function).
    """
    graph, store = getattr(cube, "graph", None), getattr(cube, "store", None)
    if not items or graph is None or store is None or not hasattr(store, "get_items"):
        return {}
    by_id = {it.id: it for it in items}
    links = [e for e in graph.edges(list(by_id), "both", [CONFLICT]) if e.metadata.get("status") == "flagged"]
    pairs = [(e.src, e.dst) for e in links if e.src in by_id] + [(e.dst, e.src) for e in links if e.dst in by_id]
    if not pairs:
        return {}
    others = store.get_items(sorted({o for _, o in pairs}))
    meta = {(e.src, e.dst): e.metadata for e in links}
    now = utcnow()
    said: dict[str, list[Attribute]] = {}
    out: dict[str, list[Conflict]] = {}
    for hit_id, other_id in sorted(set(pairs)):
        hit, other = by_id[hit_id], others.get(other_id)
        if other is None or other.state not in LIVE_STATES or other.user_id != hit.user_id or other_id == hit_id \
                or other.agent_id not in (None, hit.agent_id) or (other.valid_to is not None and other.valid_to <= now):
            continue
        m = meta.get((hit_id, other_id)) or meta.get((other_id, hit_id)) or {}
        if not _still_disagree(hit, other, m, said):
            continue
        out.setdefault(hit_id, []).append(Conflict(other_id, memory_text(other), str(m.get("entity", "")),
                                                   str(m.get("attribute", ""))))
    return out


def _still_disagree(a: MemoryItem, b: MemoryItem, link: dict[str, Any], said: dict[str, list[Attribute]]) -> bool:
    """Whether ``a`` and ``b`` as they read now still state ``link``'s entity and attribute with different
    values: a memory edited since the organiser wrote the link (new text, same id) may no longer say it, or
    may now agree; the link goes at the next pass, the note at once. A link naming no entity and attribute
    (an application's own) has nothing to check it by and holds. ``said``: statements by item id (a cache)."""
    entity, attribute = link.get("entity"), link.get("attribute")
    if not isinstance(entity, str) or not isinstance(attribute, str) or not entity or not attribute:
        return True
    key = f"{entity.lower()}|{attribute}"
    for it in (a, b):
        if it.id not in said:
            said[it.id] = statements(it)
    mine = [s.value for s in said[a.id] if s.key == key]
    theirs = [s.value for s in said[b.id] if s.key == key]
    return any(not same_value(x, y) for x in mine for y in theirs)


def conflict_notes(cube: Any, items: Sequence[MemoryItem], chars: int = 80) -> dict[str, list[str]]:
    """item id -> the short texts of its flagged conflicts (:func:`flagged_conflicts`), what
    :func:`memos_integrations.prompting.format_memory` marks a line with; ``{}`` when there are none or
    the lookup fails (a context never fails for want of its conflict notes).

    A cube with its own ``conflict_notes(items, chars)`` (a
    :class:`~memos_integrations.remote.RemoteCube`: one request to the service for the page) answers
    itself, so every face marks conflicts the same way on a local and on a remote cube; no items, no call."""
    from ..errors import MemosError

    if not items:
        return {}
    own = getattr(cube, "conflict_notes", None)
    try:
        if callable(own):
            notes = own(items, chars)
            return notes if isinstance(notes, dict) else {}
        found = flagged_conflicts(cube, items)
    except MemosError:
        return {}
    return {i: [c.short(chars) for c in cs] for i, cs in found.items()}
