"""Extractive entities: the names a text mentions, without a model.

Multi-hop questions hinge on names ("What did Caroline and Melanie both try?", "Where did Jon's
dance studio open?"). An entity here is a run of capitalised words that is not a sentence's first
word (unless it is clearly a name: it recurs capitalised mid-sentence elsewhere in the text, or it
is not a common English word), plus quoted phrases. Deterministic; the same function is used on
queries and on memories, so both sides agree on what a name is.
"""

from __future__ import annotations

import re

# Words that start sentences or questions capitalised without naming anything.
_COMMON = frozenset(
    """a about after again all also an and any are as at be because been before being both but by can
    could did do does doing during each few for from had has have having he her here hers him his how i
    if in into is it its just me more most my no nor not now of off on once only or other our out over
    own same she should so some such than that the their them then there these they this those through
    to too under until up very was we were what when where which while who whom why will with would you
    your yes yeah hey hi hello oh wow thanks thank sure okay ok well great good nice cool awesome really
    sounds congrats congratulations anyway sorry haha lol glad love let lets let's that's it's i'm i've
    i'd i'll you're you've we're they're what's how's there's dear mr mrs ms dr
    monday tuesday wednesday thursday friday saturday sunday january february march april may june july
    august september october november december today yesterday tomorrow""".split()
)
_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9'\-]*|[.!?\n]")
_QUOTED = re.compile(r"[\"“]([^\"”]{2,60})[\"”]")


def entities(text: str) -> list[str]:
    """The names ``text`` mentions, in order, without repeats (as written, possessives removed).

    Example:
        >>> entities("What did Caroline tell Melanie about the LGBTQ support group in New York?")
        ['Caroline', 'Melanie', 'LGBTQ', 'New York']
        >>> entities("When did she go?")
        []
    """
    found: list[str] = []
    run: list[str] = []
    first = True  # the next word starts a sentence

    def flush() -> None:
        if run:
            name = " ".join(run)
            if name not in found:
                found.append(name)
            run.clear()

    for token in _TOKEN.findall(text):
        if token in ".!?\n":
            flush()
            first = True
            continue
        word = token[:-2] if token.endswith(("'s", "’s")) else token.rstrip("'")
        capital = word[:1].isupper()
        if capital and word.lower() not in _COMMON and (not first or len(word) > 1):
            run.append(word)
            if word != token:  # a possessive ends the name: "Jon's dance studio"
                flush()
        else:
            flush()
        first = False
    flush()
    for quoted in _QUOTED.findall(text):
        q = quoted.strip()
        if q and q not in found:
            found.append(q)
    return found
