"""Adversary, session 7: issue 14's organiser and its summaries, attacked.

Each test here failed on the code it was written against (committed ``xfail(strict=True)``); the fixes
are in storage/organize_state.py (superseded sources) and organize/__init__.py (writes during a pass)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import memos_integrations.organize as O
from memos_integrations.items import LIVE_STATES, Kind, utcnow

TEXTS = ["My bank PIN is 4417 and I keep it in my head.", "My bank is Nordea and I bank online.",
         "I opened a bank account at Nordea in 2019.", "My bank card is blue.",
         "The bank sends me letters every month."]


def _summaries(cube: Any, user: str, what: str | None = None) -> list[Any]:
    return [s for s in cube.get_all(kinds=[Kind.SUMMARY], user_id=user)
            if s.state in LIVE_STATES and (what is None or s.metadata.get("summary") == what)]


def test_a_summary_quoting_a_superseded_memory_is_not_a_hit(cube: Any) -> None:
    """The reader's SUPERSEDE (and the organiser's own conflict resolution) close a memory's validity
    (``valid_to``) and keep its text and state: the memory is no longer served as current, and the
    organiser drops it from its clusters on the next run. Between the two, ``stale_summaries`` only
    looks at state and text, so a summary still quoting the superseded fact is served as current."""
    items = cube.add(memory=TEXTS, user_id="u", session_id="s1")
    cube.organize(user_id="u", reader=None)
    assert any("4417" in s.text for s in _summaries(cube, "u", "topic"))
    cube.update(items[0].id, valid_to=utcnow() - timedelta(seconds=1))     # what SUPERSEDE writes
    # the superseded memory itself is not served as current ...
    hits = cube.search("What is my bank PIN?", user_id="u", top_k=5, plan="balanced")
    assert items[0].id not in {h.item.id for h in hits}
    # ... nor may a summary that quotes it be
    for plan in ("fast", "balanced", "deep"):
        hits = cube.search("What is my bank PIN?", user_id="u", top_k=5, plan=plan)
        assert not [h.item.id for h in hits if "4417" in h.item.text], plan
    assert O.stale_summaries(cube.store, [s for s in _summaries(cube, "u") if items[0].id in s.sources])


def test_a_memory_written_while_the_organiser_runs_is_organised_by_the_next_run(cube: Any, monkeypatch: Any) -> None:
    """The scheduler's organise job runs while the agent keeps writing. The progress record takes the
    user's fingerprint *after* the pass, so a memory another thread or process wrote during the pass is
    counted as organised: the next run skips the user, and the memory stays out of its session's
    episode (and every cluster and link) until something else about the user changes."""
    cube.add(memory=TEXTS[:3], user_id="u", session_id="s1")
    real = O.build_user_tree

    def racing(c: Any, user: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(c, user, *args, **kwargs)
        c.add(memory=TEXTS[3:], user_id="u", session_id="s1")        # a concurrent writer, mid-pass
        return out

    monkeypatch.setattr(O, "build_user_tree", racing)
    cube.organize(user_id="u", reader=None)
    monkeypatch.setattr(O, "build_user_tree", real)
    report = cube.organize(user_id="u", reader=None)
    assert report.users == 1, "the user's new memories were not organised: the run was skipped"
    episode = _summaries(cube, "u", "episode")[0]
    assert episode.metadata["members"] == 5
