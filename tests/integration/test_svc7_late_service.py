"""The ``late`` preset through the service (server/late_embed.py, textual/embed_process.py): a cube filled over
REST with the real embedding child has the token vectors an embedded add writes (same bytes), and a late
search over REST, the face route and MCP returns what ``MemCube.search(plan="late")`` returns on that same cube,
hit for hit, where late and learned differ. Before: the child returned pooled vectors only, the served cube had
no token vectors, REST refused ``plan="late"`` and a late search ranked as learned."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from memos_integrations import MemCube  # noqa: E402
from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.server.late_embed import LateBatched  # noqa: E402
from memos_integrations.server.service import serving_embedder  # noqa: E402

CHAT = [
    ("Melanie", "Hey Caroline! I took the kids camping at the lake last weekend."),
    ("Caroline", "That sounds lovely. What did you all do there?"),
    ("Melanie", "We roasted marshmallows, went swimming and watched the stars."),
    ("Caroline", "I went to a support group meeting on Tuesday, it helped a lot."),
    ("Melanie", "I'm proud of you. Painting keeps me calm, I finished a sunrise last month."),
    ("Caroline", "You should show me! I started reading a book about adoption agencies."),
    ("Melanie", "My kids love pottery class, we made bowls and a little vase together."),
    ("Caroline", "I want to become a counselor for young people who feel alone."),
    ("Melanie", "We also went hiking on the hill behind our house with the dog."),
    ("Caroline", "I ran a charity race for mental health last Saturday."),
    ("Melanie", "The kids and I visited the museum and saw dinosaur bones."),
    ("Caroline", "My friends threw me a picnic for my birthday in the park."),
    ("Melanie", "I play the clarinet in a community band on weekends."),
    ("Caroline", "I'm researching schools that train counselors near the city."),
    ("Melanie", "We went to the beach and built a huge sandcastle with my son."),
    ("Caroline", "I bought a necklace from my grandmother's home country, it means a lot."),
    ("Melanie", "Reading 'Charlotte's Web' to my daughter every night is our ritual."),  # these two: one request
    ("Caroline", "I painted a rainbow mural with the youth center last week."),
]
#: added as text with an Idempotency-Key (embedded before the write's transaction: server/idempotent.py)
FACTS = ["Melanie's family went to a concert and the kids danced all night.",
         "Caroline has been volunteering at the animal shelter on Thursdays."]
QUESTIONS = ["What activities does Melanie do with her kids?", "What has Melanie painted?",
             "Which books has Melanie read?", "What events has Caroline joined to help others?",
             "Where has Melanie taken her family?", "What instrument does Melanie play?",
             "What did Caroline do for mental health?"]


class Served(NamedTuple):
    mos: MOS
    emb: Any
    client: TestClient
    auth: dict[str, str]


def _fill(add_messages: Any, add_text: Any) -> None:
    """The same writes, over REST or on an embedded cube: one turn a request, two turns in one, two facts."""
    for who, text in CHAT[:-2]:
        add_messages([(who, text)])
    add_messages(CHAT[-2:])
    for n, text in enumerate(FACTS):
        add_text(text, n)


@pytest.fixture(scope="module", params=[True, False], ids=["child", "in-process"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None,
           embedder: Any) -> Iterator[Served]:
    """What ``memcube serve`` builds (int8 queries; the embedding child, or ``--no-embed-process``), filled over REST."""
    home = tmp_path_factory.mktemp("late") / "home"
    emb = serving_embedder(home, "int8", embed_process=request.param)
    mos = MOS(home, embedder=emb)
    keys = KeyStore.open(mos.home / "mos.db")
    mos.create_user("alice")
    mos.create_cube_for_user("c", owner_id="alice")
    auth = {"Authorization": f"Bearer {keys.create('alice')[0]}"}
    client = TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False))
    with client:
        def messages(turns: list[tuple[str, str]]) -> None:
            body = {"messages": [{"role": "user", "name": w, "content": t} for w, t in turns], "session_id": "s1",
                    "cube_id": "c"}
            r = client.post("/v1/memories", json=body, headers=auth)
            assert r.status_code in (200, 201), r.text

        def text(t: str, n: int) -> None:
            r = client.post("/v1/memories", json={"text": t, "cube_id": "c"}, headers={**auth, "Idempotency-Key": f"k{n}"})
            assert r.status_code in (200, 201), r.text

        _fill(messages, text)
        yield Served(mos, emb, client, auth)
    keys.close()
    mos.close()
    emb.close()


def _rows(cube: MemCube) -> dict[str, tuple[int, bytes]]:
    """The cube's late_tokens rows by their item's text."""
    text = {it.id: it.text for it in cube.text_mem.list_items()}
    return {text[r[0]]: (r[1], bytes(r[2])) for r in cube.text_mem.store.db.read("SELECT item_id, n, data FROM late_tokens")}


def _same_cube(served: Served, embedder: Any) -> MemCube:
    """The served cube, opened embedded with the in-process MiniLM (fp32 queries: the library's default)."""
    return MemCube.open(served.mos._cube("c").path, embedder=embedder)


def test_the_service_is_a_token_source(served: Served) -> None:
    assert isinstance(served.emb, LateBatched)
    assert served.emb.query_precision_in_use == "int8"  # plain searches keep int8 queries
    if served.emb.process is not None:
        assert served.emb.process.info["precision_in_use"] == "int8"


def test_items_added_through_the_service_have_the_token_vectors_an_embedded_add_writes(
        served: Served, embedder: Any, tmp_path: Path) -> None:
    twin = MemCube.create(tmp_path / "twin", embedder=embedder)

    def messages(turns: list[tuple[str, str]]) -> None:
        twin.add(messages=[{"role": "user", "name": w, "content": t} for w, t in turns], user_id="alice",
                 session_id="s1")

    _fill(messages, lambda t, n: twin.add(memory=t, user_id="alice"))
    cube = _same_cube(served, embedder)
    got, want = _rows(cube), _rows(twin)
    assert len(want) == len(CHAT) + len(FACTS)  # every item, by every path: child, in process, embedded first
    assert got == want  # the same int8 bytes, row counts and scales
    twin.close()
    cube.close()


def _rest(served: Served, q: str, plan: str) -> list[tuple[str, float]]:
    r = served.client.post("/v1/memories/search", json={"query": q, "k": 5, "plan": plan, "cube_id": "c"},
                           headers=served.auth)
    assert r.status_code == 200, r.text
    return [(h["item"]["id"], round(h["score"], 6)) for h in r.json()["hits"]]


def test_a_late_search_through_the_service_ranks_as_the_embedded_late_search(served: Served, embedder: Any) -> None:
    cube = _same_cube(served, embedder)
    differ = 0
    for q in QUESTIONS:
        embedded = {p: [(h.item.id, round(h.score, 6)) for h in cube.search(q, top_k=5, plan=p)]
                    for p in ("late", "learned")}
        differ += [i for i, _ in embedded["late"]] != [i for i, _ in embedded["learned"]]
        assert _rest(served, q, "late") == embedded["late"], q
        face = served.client.post("/v1/faces/search", json={"query": q, "k": 5, "plan": "late", "cube_id": "c"},
                                  headers=served.auth)
        assert face.status_code == 200, face.text
        assert [(h["item"]["id"], round(h["score"], 6)) for h in face.json()["hits"]] == embedded["late"], q
    assert differ >= 3  # questions where the late columns change the order: the comparison can fail
    cube.close()


def test_a_plain_search_does_not_pay_for_late(served: Served) -> None:
    process = served.emb.process
    if process is None:
        pytest.skip("counts the child's requests")
    served.emb.clear_query_cache()
    before = process.requests
    _rest(served, "What did Caroline paint with the youth center?", "learned")
    assert process.requests == before + 1  # one int8 query pass, no token vectors, as before
    before = process.requests
    _rest(served, "What did Caroline paint with the youth center?", "late")
    assert process.requests == before + 1  # one fp32 pass with the query's token vectors


async def test_mcp_search_takes_the_late_plan(served: Served, embedder: Any) -> None:
    from mcp import Client

    from memos_integrations.server.mcp import build_server

    cube = _same_cube(served, embedder)
    async with Client(build_server(served.mos, lambda _headers: "alice")) as client:
        for q in QUESTIONS[:3]:
            found = await client.call_tool("search_memory", {"query": q, "k": 5, "plan": "late", "cube_id": "c"})
            assert not found.is_error
            want = [(h.item.id, round(h.score, 6)) for h in cube.search(q, top_k=5, plan="late")]
            assert [(m["id"], m["score"]) for m in found.structured_content["memories"]] == want
    cube.close()
