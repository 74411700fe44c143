"""Adversary, session 7: the organiser on empty, tiny, huge and repetitive inputs.

A 1 MB memory (accepted by ``cube.add``) made ``cube.organize()`` run for over 9 CPU minutes before it
was stopped (measured on this 2-core machine, load ~5; the entity pass alone: 25 KB 1.6 s, 50 KB 5.4 s,
100 KB 21 s: quadratic). The cause: ``links.names`` searched the whole text before every capitalised
word for a sentence end. The cost test counts the characters that search reads instead of timing it."""

from __future__ import annotations

import random
from typing import Any

from memos_integrations.items import LIVE_STATES, Kind
from memos_integrations.organize import links


class _Counting:
    """Stands in for ``links._SENTENCE_START``: counts the characters each search reads."""

    def __init__(self, real: Any) -> None:
        self.real, self.read = real, 0

    def search(self, text: str) -> Any:
        self.read += len(text)
        return self.real.search(text)


def test_entity_extraction_reads_a_long_memory_a_bounded_number_of_times(monkeypatch: Any) -> None:
    counting = _Counting(links._SENTENCE_START)
    monkeypatch.setattr(links, "_SENTENCE_START", counting)
    text = "Maya went hiking in the Alps with Pixel. " * 500          # 20 KB, 1,500 names
    found = links.names(text)
    assert len(found) >= 1000
    assert counting.read <= 20 * len(text), f"read {counting.read:,} characters for a {len(text):,}-character text"


def test_sentence_starts_are_what_they_were() -> None:
    """Whatever the fix, a name opens a sentence exactly where the regular expression said it does."""
    rng = random.Random(7)
    alphabet = ["Maya", "Pixel", "New York", "the", "dog", ".", "!", "?", ":", ";", '"', "“", " ", "  ", "\n",
                "\t", "\u00a0", ",", "of"]
    for _ in range(400):
        text = "".join(rng.choice(alphabet) + rng.choice(["", " "]) for _ in range(rng.randint(1, 30)))
        expected = []
        for m in links._NAME.finditer(text):
            expected.append(bool(links._SENTENCE_START.search(text[: m.start()])))
        starts = [s for _, s in links.names(text)]
        # names() drops stop words and short runs; compare where both kept the run
        kept = [bool(links._SENTENCE_START.search(text[: m.start()])) for m in links._NAME.finditer(text)
                if _kept(m.group(0))]
        assert len(kept) == len(starts)
        words_first = [m.group(0).split()[0] for m in links._NAME.finditer(text) if _kept(m.group(0))]
        firsts = [_first(m.group(0)) for m in links._NAME.finditer(text) if _kept(m.group(0))]
        assert starts == [k and w == f for k, w, f in zip(kept, firsts, words_first)], repr(text)


def _words(run: str) -> list[str]:
    import re

    words = [w for w in re.split(r"\s+", run.strip("'’-")) if w]
    while words and words[0] in links._STOP:
        words.pop(0)
    while words and words[-1] in ("of", "the"):
        words.pop()
    return words


def _kept(run: str) -> bool:
    import re

    words = _words(run)
    if not words:
        return False
    name = re.sub(r"['’]s$", "", " ".join(words))
    return not (len(name) < 2 or name in links._STOP)


def _first(run: str) -> str:
    return _words(run)[0]


def test_organize_on_nothing_and_on_one_memory(cube: Any) -> None:
    assert cube.organize(reader=None).users == 0
    cube.add(memory="Just one thing.", user_id="u", session_id="s")
    report = cube.organize(reader=None)
    assert (report.users, report.topics_written, report.episodes_written) == (1, 0, 1)
    [episode] = [s for s in cube.get_all(kinds=[Kind.SUMMARY], user_id="u") if s.state in LIVE_STATES]
    assert episode.text.endswith("Just one thing.") and episode.metadata["members"] == 1
