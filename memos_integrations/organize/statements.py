"""First-person statements: "My favourite colour is ...", "I live in ...": one definition, shared.

The profile (:mod:`.partitions`) keys a first-person preference by the attribute it states; the
conflict links (:mod:`.links`) compare the values two first-person statements of the same speaker
give the same attribute. Both read :data:`FIRST_PERSON` and :func:`self_attribute` from here, so
the two never disagree about what a statement is.

Example:
    >>> [(s.attribute, s.value) for s in first_person_statements("I live in Lisbon now. My dog is a beagle.")]
    [('lives in', 'lisbon'), ('dog', 'beagle')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FIRST_PERSON", "SINGLE_VALUED", "FirstPerson", "first_person_statements", "same_value", "self_attribute", "value_of"]

#: "my <attribute> is|was|are ..." or "I [now] live in|work at|... ": groups ``attr`` or ``verb``
FIRST_PERSON = re.compile(
    r"\b[Mm]y\s+(?P<attr>(?:favou?rite\s+)?[a-z]+(?:\s+[a-z]+)?)\s+(?:is|was|are)\s"
    r"|\bI\s+(?:now\s+)?(?P<verb>live in|work at|work for|work as|am from|am married to|am allergic to)\b")

#: the first-person verb -> the third-person attribute it states (so "I live in" and "Maya lives in" share a key)
_THIRD = {"live in": "lives in", "work at": "works at", "work for": "works for", "work as": "works as",
          "am from": "is from", "am married to": "is married to", "am allergic to": "is allergic to"}
_VALUE = re.compile(r"\s*(?P<val>[^.,;!?\n\"“”{}\[\]]{1,60})")
#: words that end a value without belonging to it ("Lisbon now", "Porto these days")
_TAIL = re.compile(r"\s+(?:now|these days|nowadays|at the moment|currently|anymore|though|too|as well)$")
#: words that open the next clause: a value ends before them
_CLAUSE = re.compile(r"\s+(?:and|but|because|so|which|who|whom|since|while|although|though|where|when|if|or)\s+")
#: "my favourite <x> is" that are moments, not facts about the speaker: never a conflict
_NOT_A_FACT = frozenset(
    "part thing day moment plan plans idea goal goals question point guess bad pleasure turn advice hope".split())
#: "my <x> is" attributes with one value at a time (beside "my favourite <x>"): "my art is important to me" and
#: "my family is awesome" are opinions, many at once, and never a conflict (LoCoMo dev flagged both otherwise)
SINGLE_VALUED = frozenset("""name birthday age job address email phone number bank employer boss doctor dentist
    landlord husband wife partner boyfriend girlfriend fiance fiancé fiancee fiancée hometown salary rent nationality
    religion surname nickname title occupation profession school university major dog cat pet car""".split())


def self_attribute(match: re.Match[str]) -> str:
    """The attribute a :data:`FIRST_PERSON` match states, in third-person form (``lives in``, ``favourite colour``)."""
    attr = re.sub(r"\s+", " ", match.group("attr") or match.group("verb")).lower()
    return _THIRD.get(attr, attr)


def value_of(raw: str) -> str:
    """A stated value, compared form: lower case, spaces folded, no article, no trailing ``now``, and
    only up to the clause that follows it ("Nordea and my account ends in 1234": ``nordea``).

    >>> value_of("Nordea and my account number ends in 1234")
    'nordea'
    """
    value = re.sub(r"\s+", " ", raw).strip().lower()
    value = _CLAUSE.split(value, maxsplit=1)[0].strip()
    value = re.sub(r"^(?:a|an|the)\s+", "", value)
    while True:
        cut = _TAIL.sub("", value)
        if cut == value:
            return value
        value = cut


def same_value(a: str, b: str) -> bool:
    """Whether two stated values agree: equal, or one goes on from the other ("lisbon" / "lisbon with my wife")."""
    return a == b or a.startswith(b + " ") or b.startswith(a + " ")


@dataclass(frozen=True)
class FirstPerson:
    """One present-tense first-person statement: the speaker's ``attribute`` is ``value``."""

    attribute: str
    value: str


def _single_valued(words: list[str]) -> bool:
    if words[0] in ("favourite", "favorite"):
        return len(words) > 1 and words[-1] not in _NOT_A_FACT
    return " ".join(words) in SINGLE_VALUED or words[-1] in SINGLE_VALUED


def first_person_statements(text: str) -> list[FirstPerson]:
    """The present-tense first-person facts of ``text`` about a single-valued attribute (:data:`SINGLE_VALUED`,
    ``favourite <x>``); the past tense and opinions ("my art is important to me") are no such fact."""
    out: list[FirstPerson] = []
    for m in FIRST_PERSON.finditer(text):
        attr = m.group("attr")
        if attr is not None and (m.group(0).rstrip().endswith(" was") or not _single_valued(attr.split())):
            continue
        v = _VALUE.match(text, m.end())
        if v is None:
            continue
        value = value_of(v.group("val"))
        if value:
            out.append(FirstPerson(self_attribute(m), value))
    return out
