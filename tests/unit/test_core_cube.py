"""The cube's everyday life: versions and history, tombstones and revival, relations, audit, stats,
copies (dump / clone / merge) and the lossless JSONL export / import."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from memos_integrations import MemCube
from memos_integrations.errors import EmbedderMismatchError, InvalidInputError, ItemNotFoundError
from memos_integrations.items import Edge, Kind, Lifecycle, MemoryItem

UTC = timezone.utc


def _live_index_consistent(cube) -> None:  # type: ignore[no-untyped-def]
    live = {i.id for i in cube.get_all(include_archived=True)}
    assert cube.index.ids() == live
    assert cube.index.count() == cube.stats()["items"] == len(live)
    assert cube.store.outbox() == []


def test_update_keeps_every_version_and_history_returns_them(cube) -> None:  # type: ignore[no-untyped-def]
    item = cube.add(memory="Alice lives in Porto.", user_id="alice", tags=["home"])[0]
    v2 = cube.update(item.id, text="Alice lives in Lisbon.", principal="editor")
    v3 = cube.update(item.id, tags=["home", "moved"], metadata={"since": 2023}, event_time="8 May 2023")
    assert (v2.version, v3.version) == (2, 3)
    assert v2.created_by == "editor" and v2.created_at == item.created_at and v2.updated_at >= item.updated_at
    history = cube.history(item.id)
    assert [h.version for h in history] == [1, 2, 3]
    assert [h.text for h in history] == ["Alice lives in Porto.", "Alice lives in Lisbon.", "Alice lives in Lisbon."]
    assert history[0].tags == ["home"] and history[2].tags == ["home", "moved"]
    assert history[2].metadata == {"since": 2023} and history[2].event_time == datetime(2023, 5, 8, tzinfo=UTC)
    assert history[-1] == cube.get(item.id) == v3
    # the search sees the current text only
    hits = cube.search("Where does Alice live?", user_id="alice")
    assert [h.item.id for h in hits] == [item.id] and hits[0].item.text == "Alice lives in Lisbon."
    assert cube.search("Porto", plan=cube_plan_keyword_only()) == []
    _live_index_consistent(cube)


def cube_plan_keyword_only():  # type: ignore[no-untyped-def]
    from memos_integrations.textual.retrieve import BALANCED

    return BALANCED.model_copy(update={"dense": False, "name": "keyword-only"})


def test_update_reembeds_only_when_the_text_changes(cube, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    item = cube.add(memory="The meeting is on Tuesday.")[0]
    calls: list[list[str]] = []
    original = cube.embedder.embed_documents
    monkeypatch.setattr(cube.embedder, "embed_documents", lambda texts: calls.append(list(texts)) or original(texts))
    cube.update(item.id, tags=["work"])
    assert calls == []
    cube.update(item.id, text="The meeting moved to Thursday.")
    assert calls == [["The meeting moved to Thursday."]]
    assert cube.search("Thursday meeting", top_k=1)[0].item.text == "The meeting moved to Thursday."


def test_delete_is_a_tombstone_and_readding_revives_as_a_new_version(cube) -> None:  # type: ignore[no-untyped-def]
    keep, gone = cube.add(memory=["Bob plays the cello.", "Bob collects vintage stamps."], user_id="bob")
    assert cube.delete(gone.id, principal="bob") == 1
    assert cube.delete(gone.id) == 0  # already a tombstone
    assert cube.delete(["never-there"]) == 0
    with pytest.raises(ItemNotFoundError):
        cube.get(gone.id)
    assert gone.id not in {h.item.id for h in cube.search("stamps collection", user_id="bob")}
    assert gone.id not in {i.id for i in cube.get_all(user_id="bob", include_archived=True)}
    assert cube.text_mem.get_many([keep.id, gone.id]) == [keep]
    history = cube.history(gone.id)
    assert [(h.version, h.state) for h in history] == [(1, Lifecycle.GENERATED), (2, Lifecycle.DELETED)]
    assert history[1].created_by == "bob"
    stats = cube.stats()
    assert stats["items"] == 1 and stats["by_state"] == {"generated": 1, "deleted": 1}
    _live_index_consistent(cube)
    with pytest.raises(ItemNotFoundError):
        cube.update(gone.id, text="edited after deletion")

    revived = cube.add_items([MemoryItem(text="Bob collects vintage stamps again.", id=gone.id, user_id="bob")])[0]
    assert revived.version == 3 and revived.state is Lifecycle.GENERATED
    assert revived.created_at == history[0].created_at
    assert [h.version for h in cube.history(gone.id)] == [1, 2, 3]
    assert cube.search("stamps", user_id="bob", top_k=1)[0].item.id == gone.id
    _live_index_consistent(cube)


def test_delete_all_for_a_user(cube) -> None:  # type: ignore[no-untyped-def]
    cube.add(memory=["a1", "a2"], user_id="a")
    cube.add(memory=["b1"], user_id="b")
    assert cube.delete_all(user_id="a") == 2
    assert [i.text for i in cube.get_all()] == ["b1"]
    _live_index_consistent(cube)


def test_lifecycle_states_and_archived_items(cube) -> None:  # type: ignore[no-untyped-def]
    a, b = cube.add(memory=["Carol swims at dawn.", "Carol swims in the sea."], user_id="carol")
    cube.update(a.id, state="archived")
    assert [h.item.id for h in cube.search("Carol swims", user_id="carol")] == [b.id]
    assert [i.id for i in cube.get_all(user_id="carol")] == [b.id]
    assert {i.id for i in cube.get_all(user_id="carol", include_archived=True)} == {a.id, b.id}
    cube.update(a.id, state=Lifecycle.FROZEN)
    assert len(cube.search("Carol swims", user_id="carol")) == 2


def test_relations_and_neighbors(cube) -> None:  # type: ignore[no-untyped-def]
    a, b, c, d = cube.add(memory=["doc", "section", "chunk", "unrelated"])
    edge = cube.relate(b.id, a.id, "parent", weight=0.5, note="tree")
    assert edge == Edge(b.id, a.id, "parent", 0.5, {"note": "tree"})
    cube.relate(c.id, b.id, "parent")
    cube.relate(c.id, d.id, "mentions")
    assert {n.id for n in cube.neighbors(c.id)} == {b.id, d.id}
    assert {n.id for n in cube.neighbors(c.id, types=["parent"])} == {b.id}
    assert {n.id for n in cube.neighbors(c.id, depth=2, types=["parent"])} == {a.id, b.id}
    assert {n.id for n in cube.neighbors(a.id)} == {b.id}  # either direction
    # relating again updates the edge, it does not duplicate it
    cube.relate(b.id, a.id, "parent", weight=0.9)
    assert cube.stats()["edges"] == 3
    assert [e.weight for e in cube.graph.edges([b.id], "out", ["parent"])] == [0.9]
    # a deleted neighbour is not returned
    cube.delete(d.id)
    assert {n.id for n in cube.neighbors(c.id)} == {b.id}


def test_audit_log(cube) -> None:  # type: ignore[no-untyped-def]
    cube.audit("read", "alice", "item-1", {"why": "test"})
    cube.audit("write", "mallory", "item-2", allowed=False)
    log = cube.audit_log()
    assert [(e["action"], e["principal"], e["allowed"]) for e in log[:2]] == [("write", "mallory", False),
                                                                               ("read", "alice", True)]
    assert log[1]["detail"] == {"why": "test"} and log[1]["at"].tzinfo is not None
    assert [e["action"] for e in cube.audit_log(principal="alice")] == ["read"]
    assert len(cube.audit_log(limit=1)) == 1


def test_stats(cube) -> None:  # type: ignore[no-untyped-def]
    a = cube.add(memory="x1", user_id="u1")[0]
    cube.add(messages=[{"role": "user", "content": "hello"}, {"role": "user", "content": "again"}],
             user_id="u2", session_id="s")
    cube.update(a.id, text="x1 changed")
    stats = cube.stats()
    assert stats["items"] == 3 and stats["by_kind"] == {"fact": 1, "message": 2}
    assert stats["users"] == ["u1", "u2"] and stats["versions"] == 4 and stats["edges"] == 1
    assert stats["vectors_indexed"] == 3 and stats["vector_backend"] == "persistent"
    assert stats["embedder"] == "all-MiniLM-L6-v2" and stats["cube_id"] == cube.cube_id


def _populate(cube) -> dict[str, MemoryItem]:  # type: ignore[no-untyped-def]
    msgs = cube.add(
        messages=[{"role": "user", "name": "Caroline", "content": "I went to a support group yesterday.", "id": "D1:3"},
                  {"role": "assistant", "name": "Mel", "content": "How did it feel?", "id": "D1:4"}],
        user_id="caroline", session_id="s1", timestamp="1:56 pm on 8 May, 2023",
    )
    fact = cube.add(memory="Caroline is training to become a counsellor.", user_id="caroline", kind="fact",
                    tags=["career"], metadata={"confidence_note": "stated twice", "n": [1, {"x": None}]},
                    sources=["D1:3"])[0]
    cube.update(fact.id, text="Caroline is studying to become a counsellor.")
    gone = cube.add(memory="Temporary note to forget.", user_id="caroline")[0]
    cube.delete(gone.id)
    archived = cube.add(memory="An archived thought.", user_id="caroline")[0]
    cube.update(archived.id, state="archived", valid_to=datetime(2024, 1, 1, tzinfo=UTC))
    cube.relate(fact.id, msgs[0].id, "derived_from", weight=0.8, reader="test")
    return {"m0": msgs[0], "m1": msgs[1], "fact": fact, "gone": gone, "archived": archived}


def _all_versions(cube) -> dict[str, list[dict]]:  # type: ignore[no-untyped-def]
    ids = [r[0] for r in cube.store.read("SELECT id FROM items")]
    return {i: [v.to_dict() for v in cube.history(i)] for i in ids}


def test_export_import_jsonl_round_trip_is_lossless(cube, make_cube, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ids = _populate(cube)
    out = tmp_path / "export.jsonl"
    n_rows = cube.export_jsonl(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == n_rows
    assert sum(r["type"] == "edge" for r in rows) == 2  # next (the two turns) + derived_from

    target = make_cube("imported")
    assert target.import_jsonl(out) == 5
    assert _all_versions(target) == _all_versions(cube)  # all versions, tombstones, times, metadata
    assert list(target.export_jsonl()) == list(cube.export_jsonl())
    assert sorted((e.src, e.dst, e.type, e.weight, json.dumps(e.metadata)) for e in target.graph.edges(list(_all_versions(cube)))) == \
        sorted((e.src, e.dst, e.type, e.weight, json.dumps(e.metadata)) for e in cube.graph.edges(list(_all_versions(cube))))
    with pytest.raises(ItemNotFoundError):
        target.get(ids["gone"].id)
    assert target.get(ids["archived"].id).state is Lifecycle.ARCHIVED
    hit = target.search("When did Caroline go to the support group?", user_id="caroline")[0]
    assert hit.item.id == ids["m0"].id and hit.item.event_time == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    _live_index_consistent(target)
    s1, s2 = cube.stats(), target.stats()
    for key in ("items", "by_state", "by_kind", "users", "versions", "edges", "vectors_indexed"):
        assert s1[key] == s2[key], key


def test_import_rejects_a_broken_file_without_writing(cube, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.conftest import snapshot

    cube.add(memory="already here")
    good = json.dumps({"type": "item", "item": MemoryItem(text="fine").to_dict()})
    for bad in ("{oops", json.dumps({"type": "blob"}), json.dumps({"type": "item", "item": {"text": "x", "colour": 1}})):
        path = tmp_path / "bad.jsonl"
        path.write_text(good + "\n" + bad + "\n")
        before = snapshot(cube)
        with pytest.raises(InvalidInputError, match="bad.jsonl:2"):
            cube.import_jsonl(path)
        assert snapshot(cube) == before


def test_dump_and_clone_are_independent_copies(cube, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ids = _populate(cube)
    dumped = cube.dump(tmp_path / "dumped")
    cloned = cube.clone(tmp_path / "cloned", cube_id="twin")
    try:
        assert dumped.cube_id == cube.cube_id and cloned.cube_id == "twin"
        for copy in (dumped, cloned):
            assert _all_versions(copy) == _all_versions(cube)
            _live_index_consistent(copy)
            assert copy.search("support group", user_id="caroline")[0].item.id == ids["m0"].id
        cloned.add(memory="only in the clone")
        cube.delete(ids["m1"].id)
        assert cloned.stats()["items"] == cube.stats()["items"] + 2
        assert dumped.get(ids["m1"].id).text == "How did it feel?"
        with pytest.raises(InvalidInputError, match="not empty"):
            cube.dump(tmp_path / "dumped")
    finally:
        dumped.close()
        cloned.close()
    with MemCube.open(tmp_path / "cloned", embedder=cube.embedder) as again:  # the copy survives a reopen
        assert again.cube_id == "twin" and again.stats()["items"] == cube.stats()["items"] + 2


def test_merge_copies_live_items_and_edges(cube, make_cube) -> None:  # type: ignore[no-untyped-def]
    other = make_cube("other")
    a, b = other.add(memory=["Dana bakes sourdough.", "Dana runs marathons."], user_id="dana")
    gone = other.add(memory="forgotten", user_id="dana")[0]
    other.delete(gone.id)
    other.relate(a.id, b.id, "same_person")
    mine = cube.add(memory="Eve paints.", user_id="eve")[0]
    assert cube.merge(other, principal="admin") == 2
    assert {i.id for i in cube.get_all()} == {a.id, b.id, mine.id}
    assert cube.get(a.id).cube_id == cube.cube_id
    assert [n.id for n in cube.neighbors(a.id)] == [b.id]
    assert cube.search("sourdough bread", top_k=1)[0].item.id == a.id
    assert cube.audit_log(limit=1)[0]["action"] == "merge"
    # merging again writes new versions, never duplicates
    cube.merge(other)
    assert cube.stats()["items"] == 3 and [h.version for h in cube.history(a.id)] == [1, 2]
    _live_index_consistent(cube)


def test_merge_refuses_another_embedder(cube, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from langchain_core.embeddings import DeterministicFakeEmbedding

    with MemCube.init_from_dir(tmp_path / "fake", embedder=DeterministicFakeEmbedding(size=384)) as other:
        other.add(memory="x")
        with pytest.raises(EmbedderMismatchError, match="export and import"):
            cube.merge(other)
    assert cube.stats()["items"] == 0


def test_memories_survive_reopening(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder) as c:
        item = c.add(memory="Frank's locker code is 4512.", user_id="frank")[0]
        c.update(item.id, text="Frank's locker code is 9931.")
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder) as again:
        assert again.get(item.id).text == "Frank's locker code is 9931."
        assert len(again.history(item.id)) == 2
        assert again.search("locker code", user_id="frank")[0].item.id == item.id


def test_kinds_are_all_storable(cube) -> None:  # type: ignore[no-untyped-def]
    items = cube.add_items([MemoryItem(text=f"a {k.value}", kind=k) for k in Kind])
    assert {cube.get(i.id).kind for i in items} == set(Kind)


def test_importing_the_package_pulls_in_no_framework_and_no_torch() -> None:
    code = (
        "import sys, memos_integrations\n"
        "from memos_integrations import MemCube, MOS, CubeConfig, MemoryItem, MemoryFilter, SearchPlan\n"
        "import memos_integrations.textual.embed, memos_integrations.textual.vector\n"
        "heavy = ('torch', 'transformers', 'langchain', 'langchain_core', 'langgraph', 'llama_index', "
        "'sentence_transformers', 'peft', 'openai', 'chromadb', 'neo4j')\n"
        "print([m for m in sys.modules if m.split('.')[0] in heavy])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_import_never_rewrites_a_different_history(cube, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.unit.conftest import snapshot

    item = cube.add(memory="version one")[0]
    out = tmp_path / "e.jsonl"
    cube.export_jsonl(out)
    assert cube.import_jsonl(out) == 1  # the same export again: nothing changes
    cube.update(item.id, text="version two")
    before = snapshot(cube)
    with pytest.raises(InvalidInputError, match="already exist in this cube"):
        cube.import_jsonl(out)  # would roll the item back to v1 under a history that says v2
    assert snapshot(cube) == before
    assert [h.version for h in cube.history(item.id)] == [1, 2] and cube.get(item.id).version == 2
