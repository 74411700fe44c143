"""Adversary checks of organised memory: concurrent runs, odd user ids. Each test failed before its fix."""

from __future__ import annotations

import threading
from typing import Any

from memos_integrations.items import Kind, Lifecycle
from memos_integrations.organize import organize

TEXTS = ["Maya adopted a beagle puppy called Pixel.", "Pixel the beagle loves chasing squirrels in the park.",
         "Maya takes her dog Pixel to the vet every spring.", "Maya bakes sourdough bread every Sunday.",
         "Maya is learning to bake croissants with butter."]


def _live_summaries(cube: Any) -> list[Any]:
    return [i for i in cube.get_all(kinds=[Kind.SUMMARY]) if i.state == Lifecycle.ACTIVATED]


def test_two_organise_runs_at_once_write_one_tree(cube: Any) -> None:
    cube.add(memory=TEXTS, user_id="maya", session_id="s1")
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            organize(cube, full=True)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    once = sorted((s.metadata.get("summary"), s.text) for s in _live_summaries(cube))
    assert len(once) == len(set(once)), once  # no topic or episode written twice


def test_a_user_id_with_sql_and_path_characters_is_organised_as_any_other(cube: Any) -> None:
    odd = "x'; DROP TABLE items;--/../..\\u:=ü"
    cube.add(memory=TEXTS, user_id=odd, session_id="s1")
    cube.add(memory=TEXTS[:2], user_id="x", session_id="s1")
    report = organize(cube)
    assert report.users == 2
    assert {s.user_id for s in _live_summaries(cube)} <= {odd, "x"}
    again = organize(cube)
    assert again.users == 0 and again.users_skipped == 2
