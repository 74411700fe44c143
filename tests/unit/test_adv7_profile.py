"""Adversary, session 7: the profile keeps "one current version of each" stable fact or preference
(issue 14, must-have 1) only for third-person statements (``Maya's favourite colour is ...``). A user's
own preferences are written in the first person, the way users say them; each then gets a key of its own
(``id:<item id>``), so two contradicting preferences both stay current in the profile."""

from __future__ import annotations

from typing import Any

from memos_integrations.items import LIVE_STATES
from memos_integrations.organize import PROFILE


def test_a_first_person_preference_supersedes_the_older_one(cube: Any) -> None:
    cube.add(memory="My favourite colour is blue.", user_id="maya", kind="preference")
    cube.add(memory="My favourite colour is green now.", user_id="maya", kind="preference")
    cube.organize(user_id="maya", reader=None)
    current = [i.text for i in cube.get_all(user_id="maya")
               if i.metadata.get("partition") == PROFILE and i.state in LIVE_STATES]
    assert current == ["My favourite colour is green now."]


def test_a_third_person_preference_supersedes_the_older_one(cube: Any) -> None:
    """The case that works, for contrast."""
    cube.add(memory="Maya's favourite colour is red.", user_id="maya", kind="preference")
    cube.add(memory="Maya's favourite colour is yellow.", user_id="maya", kind="preference")
    cube.organize(user_id="maya", reader=None)
    current = [i.text for i in cube.get_all(user_id="maya")
               if i.metadata.get("partition") == PROFILE and i.state in LIVE_STATES]
    assert current == ["Maya's favourite colour is yellow."]
