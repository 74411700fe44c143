"""Adversary (session 9b): a RemoteCube never answers notes its search kept from before a write through it.

Found: ``_call`` dropped the kept notes when a write was *sent*, but a search already in flight (answered by
the service before the write landed) kept its page's notes when its response came back, after the write had
finished: for the next 30 s ``conflict_notes`` of that page answered what the service said before the
write (a deleted conflict still quoted), asking nothing."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from memos_integrations.remote import RemoteCube

ITEM = {"id": "m1", "text": "I live in Porto now.", "user_id": "ana"}


class Service:
    """A stand-in: a search that answers only once released (the service read the page before the write)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.searching = threading.Event()
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v1/memories/search":
            self.searching.set()
            assert self.release.wait(5)
            return httpx.Response(200, json={"hits": [{"item": ITEM, "score": 1.0, "ranks": {}}],
                                             "conflicts": {"m1": ["I live in Lisbon."]}})
        if request.url.path == "/v1/faces/conflicts":
            assert json.loads(request.content)["ids"] == ["m1"]
            return httpx.Response(200, json={"conflicts": {}})  # the conflicting memory is gone now
        return httpx.Response(200, json={"deleted": 1})


def test_a_search_answered_before_a_write_keeps_no_notes_after_it() -> None:
    service = Service()
    cube = RemoteCube("http://service.invalid", "key", client=httpx.Client(transport=httpx.MockTransport(service)))
    page: list[Any] = []
    searcher = threading.Thread(target=lambda: page.extend(cube.search("where do I live?")))
    searcher.start()
    assert service.searching.wait(5)
    cube.delete("m0")  # through this cube, while the search is in flight (it read the page before)
    service.release.set()
    searcher.join(5)
    assert [h.item.id for h in page] == ["m1"]
    assert cube.conflict_notes([h.item for h in page]) == {}  # asked again, not the pre-write answer
    assert service.asked[-1] == "POST /v1/faces/conflicts"


def test_a_search_after_the_write_keeps_its_notes() -> None:
    service = Service()
    service.release.set()
    cube = RemoteCube("http://service.invalid", "key", client=httpx.Client(transport=httpx.MockTransport(service)))
    cube.delete("m0")
    page = cube.search("where do I live?")
    assert cube.conflict_notes([h.item for h in page]) == {"m1": ["I live in Lisbon."]}
    assert "POST /v1/faces/conflicts" not in service.asked  # one request for the page


def test_an_error_quoting_conflicts_colon_never_turns_the_notes_off() -> None:
    """The fallback for an older service keyed on ``"conflicts:"`` in any refusal: a time the service cannot
    read that holds those words (a model's tool argument) switched this cube's notes off for good, every
    later page two requests. Only a search the service answers once the field is left out turns them off."""
    sent: list[dict[str, Any]] = []

    def service(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        if body.get("time_from") == "conflicts: soon":
            return httpx.Response(400, json={"error": {"type": "InvalidInputError", "message":
                                             "cannot read 'conflicts: soon' as a time; use ISO 8601"}})
        return httpx.Response(200, json={"hits": [{"item": ITEM, "score": 1.0, "ranks": {}}], "conflicts": {}})

    cube = RemoteCube("http://service.invalid", "key", client=httpx.Client(transport=httpx.MockTransport(service)))
    try:
        cube.search("where?", time_from="conflicts: soon")
    except Exception as exc:  # the service's refusal, as it said it
        assert "cannot read 'conflicts: soon'" in str(exc)
    else:
        raise AssertionError("the refusal was swallowed")
    cube.search("where?")
    assert sent[-1].get("conflicts") is True  # still asks for its notes with the search


def test_kept_notes_are_never_another_users_page_with_the_same_ids() -> None:
    """One RemoteCube (an admin key, no cube_id) serving two users: each search is that user's default cube.
    A LangGraph store value's index item id is a hash of its namespace, key and field only, so the same value
    slot in two users' cubes is the same id in both. Alice's page, then Bob's (another thread), then Alice's
    notes: the kept pages matched by id alone answered Bob's conflict texts for Alice's page."""
    same = "lg-0123456789abcdef0123456789abcdef"
    texts = {"alice": "I live in Lisbon.", "bob": "I live in Madrid."}
    asked: list[dict[str, Any]] = []

    def service(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        asked.append(body)
        if request.url.path == "/v1/faces/conflicts":
            return httpx.Response(200, json={"conflicts": {same: ["(asked again)"]}})
        user = body["user_id"]
        item = {"id": same, "text": "I live in Porto now.", "user_id": user, "cube_id": f"{user}_default"}
        return httpx.Response(200, json={"hits": [{"item": item, "score": 1.0, "ranks": {}}],
                                         "conflicts": {same: [texts[user]]}})

    cube = RemoteCube("http://service.invalid", "admin-key",
                      client=httpx.Client(transport=httpx.MockTransport(service)))
    alice = cube.search("where?", user_id="alice")
    bob = cube.search("where?", user_id="bob")
    assert cube.conflict_notes([h.item for h in bob]) == {same: ["I live in Madrid."]}
    assert cube.conflict_notes([h.item for h in alice]) in ({same: ["I live in Lisbon."]}, {same: ["(asked again)"]})


def test_a_kept_page_of_an_older_version_never_answers_for_the_current_one() -> None:
    """``search(as_of=...)`` answers a memory's older version (same id, its old text) with notes computed for that
    text; the current version's page, searched before it, must still get its own notes."""

    def service(request: httpx.Request) -> httpx.Response:
        old = "as_of" in json.loads(request.content)
        item = {**ITEM, "version": 1 if old else 2, "text": "I live in Braga." if old else ITEM["text"]}
        return httpx.Response(200, json={"hits": [{"item": item, "score": 1.0, "ranks": {}}],
                                         "conflicts": {"m1": ["(of the old text)" if old else "I live in Lisbon."]}})

    cube = RemoteCube("http://service.invalid", "key", client=httpx.Client(transport=httpx.MockTransport(service)))
    now = cube.search("where?")
    then = cube.search("where?", as_of="2023-05-01T00:00:00+00:00")
    assert cube.conflict_notes([h.item for h in now]) == {"m1": ["I live in Lisbon."]}
    assert cube.conflict_notes([h.item for h in then]) == {"m1": ["(of the old text)"]}
