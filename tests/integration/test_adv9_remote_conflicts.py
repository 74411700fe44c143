"""Adversary, session 9: ``POST /v1/faces/conflicts`` (server/routes_store.py) and a face over a RemoteCube
(``RemoteCube.conflict_notes``, ``organize.links.conflict_notes``).

A note is only ever the text of another *current* memory of the hit's user and agent (or none), as on a
local cube: the other memory deleted, superseded (``valid_to`` passed) or another agent's gives no note;
a deleted hit, a summary's id, another user's ids give none. A face whose service answers the route with
an error or with nonsense still answers, without notes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from memos_integrations.items import Edge, Kind, utcnow
from memos_integrations.langchain import MemOSRetriever
from memos_integrations.organize import organize
from memos_integrations.remote import RemoteCube
from memos_integrations.storage.graph import CONFLICT
from tests.integration.test_remote_store_faces import Service

ROUTE = "/v1/faces/conflicts"
SEARCHES = frozenset({"/v1/memories/search", "/v1/faces/search"})
HERE, NOW = "I live in Lisbon.", "I live in Porto now."


class Odd:
    """alice's memory ``hit`` flagged as contradicting five others, of which only ``ok`` is current and hers."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        cube = svc.mos._cube("alice_cube")
        add = lambda text, **kw: cube.add(memory=text, user_id="alice", **kw)[0]  # noqa: E731
        self.hit = add(HERE, session_id="s1")
        self.ok = add(NOW, session_id="s2")
        self.superseded = add("I live in Faro.", session_id="s2")
        self.deleted = add("I live in Braga.", session_id="s2")
        self.agents = add("I live in Evora.", session_id="s2", agent_id="other")
        self.gone_hit = add("I live in Sintra.", session_id="s3")
        organize(cube, reader=None)
        cube.update(self.superseded.id, valid_to=utcnow() - timedelta(seconds=1))
        cube.graph.add_edges([Edge(self.hit.id, o.id, CONFLICT, 1.0, {"status": "flagged"})
                              for o in (self.ok, self.superseded, self.deleted, self.agents)]
                             + [Edge(self.gone_hit.id, self.ok.id, CONFLICT, 1.0, {"status": "flagged"})])
        cube.delete([self.deleted.id, self.gone_hit.id])
        self.summaries = [s.id for s in cube.get_all(kinds=[Kind.SUMMARY], user_id="alice")]

    def post(self, who: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.svc.url + ROUTE, json={"cube_id": "alice_cube", **body},
                          headers={"Authorization": f"Bearer {self.svc.key[who]}"})


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Odd]:
    svc = Service(tmp_path_factory.mktemp("adv9-conflicts") / "home", embedder)
    try:
        yield Odd(svc)
    finally:
        svc.close()


def test_only_a_current_memory_of_the_same_user_and_agent_is_a_note(odd: Odd) -> None:
    assert odd.summaries  # the organised summaries exist, and have no notes of their own
    asked = [odd.hit.id, odd.gone_hit.id, odd.deleted.id, *odd.summaries, odd.hit.id]
    assert odd.post("alice", {"ids": asked}).json() == {"conflicts": {odd.hit.id: [NOW]}}
    # the agent key of alice's scout reads the same cube: the same notes, never the other agent's memory
    assert odd.post("scout", {"ids": asked}).json() == {"conflicts": {odd.hit.id: [NOW]}}
    # another user naming alice's cube: the usual 404, no text
    theirs = odd.post("bob", {"ids": asked})
    assert theirs.status_code == 404 and "Porto" not in theirs.text


class Broken(httpx.HTTPTransport):
    """The real service for every route but the conflicts route, which answers ``answer``; a search's own
    ``conflicts`` field is that answer's ``conflicts`` where it has one (the same nonsense), else left out
    (as an older service answers), so the face's notes can only come through the broken route."""

    def __init__(self, answer: httpx.Response) -> None:
        super().__init__()
        self.answer = answer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == ROUTE:
            return httpx.Response(self.answer.status_code, headers=self.answer.headers, content=self.answer.content)
        response = super().handle_request(request)
        if request.url.path not in SEARCHES or response.status_code != 200:
            return response
        data = json.loads(response.read())
        data.pop("conflicts", None)
        try:
            bad = self.answer.json()
        except ValueError:
            bad = None
        if isinstance(bad, dict) and "conflicts" in bad:
            data["conflicts"] = bad["conflicts"]
        return httpx.Response(200, json=data)


@pytest.mark.parametrize("answer", [
    httpx.Response(404, json={"error": {"type": "NotFound", "message": "Not Found"}}),  # an older service
    httpx.Response(500, text="Internal Server Error"),
    httpx.Response(200, text="<html>a proxy's page</html>"),
    httpx.Response(200, json={"conflicts": {"not-asked": ["I live on the moon."]}}),
    httpx.Response(200, json={"conflicts": ["a", "list"]}),
    httpx.Response(200, json={"conflicts": {"x": "not a list"}}),
    httpx.Response(200, json=[1, 2, 3]),
], ids=["404", "500", "html", "not-asked", "list", "str-notes", "array"])
def test_a_face_answers_without_notes_when_the_route_fails(odd: Odd, answer: httpx.Response) -> None:
    client = httpx.Client(timeout=30, transport=Broken(answer))
    with RemoteCube(odd.svc.url, odd.svc.key["alice"], cube_id="alice_cube", client=client) as remote:
        docs = MemOSRetriever(cube=remote, user_id="alice", k=5).invoke("Where do I live?")
    assert HERE in [d.page_content for d in docs]
    assert all("conflicts" not in d.metadata for d in docs)
