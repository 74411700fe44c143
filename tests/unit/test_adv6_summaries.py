"""Adversary, session 6: an organised summary outlives the memory it quotes until the next organising run.

A user deletes a memory ("forget my PIN") or corrects it; a plan that keeps summaries as hits (``fast``, and
any plan with ``summary_hits="keep"``) must not answer with a summary that still quotes the deleted or old
text. ``organize.stale_summaries`` already tells such a summary apart at read time; the plans that expand
summaries into their members (balanced, deep, ...) drop the deleted member and hold."""

from __future__ import annotations

from typing import Any

import pytest

from memos_integrations.items import Kind

TEXTS = ["My bank PIN is 4417 and I keep it in my head.", "My bank is Nordea and I bank online.",
         "I opened a bank account at Nordea in 2019.", "My bank card is blue.",
         "The bank sends me letters every month."]


def _organised(cube: Any) -> list[Any]:
    items = cube.add(memory=TEXTS, user_id="u", session_id="s1")
    cube.organize(user_id="u", reader=None)
    summaries = [i for i in cube.get_all(user_id="u") if i.kind == Kind.SUMMARY]
    assert any("4417" in s.text for s in summaries)  # the setting: a summary quotes the PIN
    return items  # type: ignore[no-any-return]


@pytest.mark.parametrize("change", ["delete", "update"])
def test_a_summary_quoting_a_deleted_or_corrected_memory_is_not_a_hit(cube: Any, change: str) -> None:
    pin = _organised(cube)[0]
    if change == "delete":
        cube.delete(pin.id)
    else:
        cube.update(pin.id, text="My bank PIN changed; I keep the new one in my head.")
    for plan in ("fast", "balanced", "deep"):
        hits = cube.search("What is my bank PIN?", user_id="u", top_k=5, plan=plan)
        assert not [h for h in hits if "4417" in h.item.text], f"{plan}: a hit still quotes the {change}d text"
