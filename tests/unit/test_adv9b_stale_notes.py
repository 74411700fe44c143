"""Adversary (session 9b): a conflict note must still be true when a face shows it.

Found: a conflict link is written by the organiser from the two texts as they were; a memory edited since
(``cube.update(text=...)``, a LangGraph ``put`` over the same key) kept its link until the next pass, so every
face said ``I live in Lisbon. (conflicts with: "I like tea.")``, and a memory edited to agree was noted as
contradicting the very text it now says. And the LangGraph notes quoted a store value whose TTL had passed
(invisible to every store read, its index item live until the sweeper runs)."""

from __future__ import annotations

from typing import Any

from memos_integrations import MemCube
from memos_integrations.organize import organize
from memos_integrations.organize.links import conflict_notes

NS = ("users", "ana", "memories")
ASK = {"messages": [("user", "Where do I live?")]}
ANA = {"configurable": {"user_id": "ana"}}


def _notes(cube: MemCube) -> dict[str, list[str]]:
    hits = cube.search("Where do I live?", user_id="ana", top_k=10)
    return {h.item.text: n for h in hits for i, n in conflict_notes(cube, [h.item]).items()}


def test_an_edited_memory_is_no_longer_noted_as_contradicting(cube: MemCube) -> None:
    lisbon = cube.add(memory="I live in Lisbon.", user_id="ana")[0]
    porto = cube.add(memory="I live in Porto now.", user_id="ana")[0]
    organize(cube, reader=None)
    assert _notes(cube) == {"I live in Lisbon.": ["I live in Porto now."], "I live in Porto now.": ["I live in Lisbon."]}
    cube.update(porto.id, text="I like tea.")  # no longer says where she lives
    assert _notes(cube) == {}
    cube.update(porto.id, text="I live in Lisbon with my wife.")  # now agrees (one value goes on from the other)
    assert _notes(cube) == {}
    cube.update(porto.id, text="I live in Faro.")  # contradicts again, on the same attribute: the link holds
    assert _notes(cube) == {"I live in Lisbon.": ["I live in Faro."], "I live in Faro.": ["I live in Lisbon."]}
    assert lisbon.id != porto.id


def test_a_hand_made_link_without_a_statement_is_still_shown(cube: MemCube) -> None:
    from memos_integrations.items import Edge
    from memos_integrations.storage.graph import CONFLICT

    a = cube.add(memory="I live in Lisbon.", user_id="ana")[0]
    b = cube.add(memory="The spare key is under the fern.", user_id="ana")[0]
    cube.graph.add_edges([Edge(b.id, a.id, CONFLICT, 1.0, {"status": "flagged"})])  # an application's own link
    assert conflict_notes(cube, [cube.get(b.id)]) == {b.id: ["I live in Lisbon."]}


def test_the_langgraph_notes_never_quote_an_expired_or_overwritten_value(cube: MemCube) -> None:
    from memos_integrations.langgraph import MemOSStore, make_recall_node

    store = MemOSStore(cube, index=True)
    store.put(NS, "a", {"text": "I live in Lisbon."}, ttl=1)
    store.put(NS, "b", {"text": "I live in Porto now."})
    organize(cube, reader=None)
    recall = make_recall_node(store, top_k=5)
    assert recall(ASK, ANA)["memories"] == ['I live in Lisbon. (conflicts with: "I live in Porto now.")',
                                            'I live in Porto now. (conflicts with: "I live in Lisbon.")']
    now: Any = store.clock
    store.clock = lambda: now() + 3600  # a's TTL (one minute) is long past; the sweeper has not run
    assert recall(ASK, ANA)["memories"] == ["I live in Porto now."]
    store.clock = now
    store.put(NS, "a", {"text": "I like tea."})  # the same key, a new value: its index item keeps its id
    assert "conflicts" not in str(recall(ASK, ANA)["memories"])


def test_a_forged_store_origin_on_a_memory_never_breaks_the_recall(cube: MemCube) -> None:
    """``metadata["lg_store"]`` is any writer's to set (``cube.add(metadata=...)``, ``POST /v1/memories``): one
    naming a namespace of numbers, in conflict with a store value, made the notes raise a TypeError, and the
    recall node with them. A namespace that is not a list of strings is no store value's."""
    from memos_integrations.langgraph import MemOSStore, make_recall_node

    store = MemOSStore(cube, index=True)
    store.put(NS, "home", {"text": "I live in Braga."})
    cube.add(memory="I live in Faro now.", user_id="ana", metadata={"lg_store": {"namespace": [1, None], "key": "k"}})
    organize(cube, reader=None)
    lines = make_recall_node(store, top_k=5)(ASK, ANA)["memories"]
    assert lines[0].startswith("I live in Braga.")
