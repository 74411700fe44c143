"""MemOS cube directories: directories written to match what MemOS's ``GeneralMemCube.dump`` writes
(``config.json``, ``textual_memory.json`` of general_text points or tree_text nodes and edges, a pickled
``activation_memory.pickle``, an adapter), round trips, and hostile directories refused cleanly. The
pickle is refused by name and never loaded: the test's pickle would create a file if it were."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from memos_integrations.errors import InvalidInputError, InvalidTypeError
from memos_integrations.interop import export_to, import_from
from memos_integrations.interop.memos import export_memos, import_memos
from memos_integrations.items import Kind, Lifecycle

EIFFEL = "a18c2ce3-7824-41de-9f67-e6ef9d7c66e7"
TENNIS = "fb778a36-e589-4c9d-8eeb-d0a71fd8299d"


def config(text_backend: str = "general_text", memory_filename: str = "textual_memory.json") -> dict[str, Any]:
    """A GeneralMemCubeConfig as MemOS writes it (models trimmed to what matters here)."""
    llm = {"backend": "huggingface", "config": {"model_name_or_path": "Qwen/Qwen3-1.7B"}}
    return {
        "model_schema": "memos.configs.mem_cube.GeneralMemCubeConfig", "user_id": "user_123", "cube_id": "user_123/cube",
        "config_filename": "config.json",
        "text_mem": {"backend": text_backend, "config": {
            "cube_id": "user_123/cube", "memory_filename": memory_filename, "extractor_llm": llm,
            "vector_db": {"backend": "qdrant", "config": {"collection_name": "c", "vector_dimension": 4, "distance_metric": "cosine"}},
            "embedder": {"backend": "ollama", "config": {"model_name_or_path": "nomic-embed-text:latest"}}}},
        "act_mem": {"backend": "kv_cache", "config": {"memory_filename": "activation_memory.pickle", "extractor_llm": llm}},
        "para_mem": {"backend": "lora", "config": {"memory_filename": "parametric_memory.adapter", "extractor_llm": llm}},
    }


def general_points() -> list[dict[str, Any]]:
    """general_text's dump: qdrant points, each {"id", "vector", "payload": {"id", "memory", "metadata"}}."""
    return [
        {"id": EIFFEL, "vector": [0.1, 0.2, 0.3, 0.4], "payload": {"id": EIFFEL, "memory": "The user loves the Eiffel Tower.",
         "metadata": {"user_id": "user_123", "session_id": "0c3d29d2-e078-4a03-960b-563bb33ec7ae", "status": "activated",
                      "type": "opinion", "memory_time": "2025-06-03", "source": "conversation", "confidence": 100.0,
                      "entities": ["Eiffel Tower"], "tags": ["opinions", "landmarks"], "visibility": "session",
                      "updated_at": "2025-06-03T00:00:00"}}},
        {"id": TENNIS, "vector": [0.4, 0.3, 0.2, 0.1], "payload": {"id": TENNIS, "memory": "The user plays tennis on Fridays.",
         "metadata": {"user_id": "user_123", "status": "activated", "type": "procedure", "memory_time": "2025-06-01",
                      "source": "conversation", "confidence": 80.0, "entities": ["tennis"], "tags": ["sport"],
                      "visibility": "private", "updated_at": "2025-06-02T10:00:00"}}},
    ]


def tree_dump() -> dict[str, Any]:
    """tree_text's dump: {"nodes": [...], "edges": [...]} with the tree metadata fields."""
    def node(i: str, text: str, **meta: Any) -> dict[str, Any]:
        base = {"user_id": "user_123", "session_id": "s-1", "status": "activated", "type": "fact",
                "memory_type": "LongTermMemory", "key": text[:20], "background": "from a chat about sport",
                "sources": ["chat:1"], "tags": ["sport"], "confidence": 99.0, "entities": [],
                "created_at": "2025-06-01T09:00:00", "updated_at": "2025-06-01T09:00:00", "embedding": [0.0, 1.0],
                "usage": []}
        return {"id": i, "memory": text, "metadata": {**base, **meta}}

    return {
        "nodes": [node("n-topic", "Sport habits", memory_type="WorkingMemory", type="topic"),
                  node("n-tennis", "Plays tennis on Fridays"),
                  node("n-old", "Played squash in 2020", status="archived")],
        "edges": [{"source": "n-topic", "target": "n-tennis", "type": "PARENT"},
                  {"source": "n-topic", "target": "n-old", "type": "PARENT"}],
    }


def memos_dir(root: Path, text: Any, cfg: Any = None, *, pickles: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config() if cfg is None else cfg))
    (root / "textual_memory.json").write_text(json.dumps(text))
    if pickles:
        # a protocol-0 pickle that would create a file named "pwned" if anyone unpickled it
        (root / "activation_memory.pickle").write_bytes(b"cos\nsystem\n(S'touch " + str(root / "pwned").encode() + b"'\ntR.")
        (root / "parametric_memory.adapter").write_bytes(b"\x80\x04not really an adapter")
    return root


def test_general_import_maps_metadata(cube: Any, tmp_path: Path) -> None:
    src = memos_dir(tmp_path / "memos", general_points(), pickles=False)
    assert import_memos(cube, src) == 2
    eiffel = cube.get(EIFFEL)
    assert eiffel.text == "The user loves the Eiffel Tower." and eiffel.kind == Kind.PREFERENCE  # an opinion
    assert (eiffel.user_id, eiffel.session_id) == ("user_123", "0c3d29d2-e078-4a03-960b-563bb33ec7ae")
    assert eiffel.event_time == datetime(2025, 6, 3, tzinfo=timezone.utc) and eiffel.tags == ["opinions", "landmarks"]
    assert eiffel.confidence == 100.0 and eiffel.state == Lifecycle.ACTIVATED
    assert eiffel.metadata == {"memos": {"source": "conversation", "entities": ["Eiffel Tower"], "visibility": "session"}}
    tennis = cube.get(TENNIS)
    assert tennis.kind == Kind.FACT and tennis.metadata["memos"]["type"] == "procedure"  # kept: no kind says it
    assert cube.search("which landmark does the user love?", top_k=1)[0].item.id == EIFFEL  # embedded here, not theirs


def test_plain_item_list_is_read_too(cube: Any, tmp_path: Path) -> None:
    items = [p["payload"] for p in general_points()]
    assert import_from("memos", cube, memos_dir(tmp_path / "memos", items, pickles=False)) == 2


def test_tree_import_keeps_nodes_edges_and_states(cube: Any, tmp_path: Path) -> None:
    src = memos_dir(tmp_path / "memos", tree_dump(), config("tree_text"), pickles=False)
    assert import_memos(cube, src) == 3
    assert {i.id for i in cube.get_all()} == {"n-topic", "n-tennis"}  # the archived one is not live ...
    assert cube.get("n-old").state == Lifecycle.ARCHIVED  # ... but kept
    assert {n.id for n in cube.neighbors("n-topic")} == {"n-tennis", "n-old"}
    topic = cube.get("n-topic")
    assert topic.metadata["memos"]["memory_type"] == "WorkingMemory" and topic.metadata["memos"]["type"] == "topic"
    assert topic.sources == ["chat:1"] and "embedding" not in topic.metadata["memos"]


def test_pickled_activation_memory_is_refused_by_name_and_never_loaded(cube: Any, tmp_path: Path) -> None:
    src = memos_dir(tmp_path / "memos", general_points())
    with pytest.raises(InvalidInputError) as refused:
        import_memos(cube, src)
    message = str(refused.value)
    assert "activation_memory.pickle" in message and "parametric_memory.adapter" in message
    assert "runs whatever code" in message and "skip_pickles=True" in message
    assert cube.stats()["items"] == 0
    assert import_memos(cube, src, skip_pickles=True) == 2  # the text alone
    assert not (src / "pwned").exists()  # the pickle was never unpickled
    (src / "textual_memory.json").write_bytes((src / "activation_memory.pickle").read_bytes())
    with pytest.raises(InvalidInputError, match="not JSON"):  # a pickle posing as the text file: read as text only
        import_memos(cube, src, skip_pickles=True)
    assert not (src / "pwned").exists()


def test_round_trip_general(cube: Any, make_cube: Callable[..., Any], tmp_path: Path) -> None:
    [tea] = cube.add(memory="Alice likes genmaicha.", user_id="alice", session_id="s1", kind="preference",
                     tags=["tea"], metadata={"source": "chat"}, timestamp="2024-05-08")
    cube.add(memory="Alice met Bob at 3pm.", user_id="alice", kind="event", timestamp="2024-05-09T15:00")
    [gone] = cube.add(memory="Alice had a cat.", user_id="alice")
    cube.delete(gone.id)
    out = tmp_path / "memos_out"
    assert export_memos(cube, out) == 2
    points = json.loads((out / "textual_memory.json").read_text())
    assert all(len(p["vector"]) == cube.embedder.dimension and p["payload"]["id"] == p["id"] for p in points)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["text_mem"]["backend"] == "general_text" and not list(out.glob("*.pickle"))
    copy = make_cube("copy")
    assert import_memos(copy, out) == 2
    for original in cube.get_all():
        again = copy.get(original.id)
        for field in ("text", "kind", "user_id", "session_id", "tags", "metadata", "event_time", "created_at", "updated_at"):
            assert getattr(again, field) == getattr(original, field), field
    assert copy.get(tea.id).state in (Lifecycle.GENERATED, Lifecycle.ACTIVATED)
    again = tmp_path / "again"
    export_to("memos", copy, again)
    assert json.loads((again / "textual_memory.json").read_text()) == points  # a second trip changes nothing


def test_round_trip_tree(cube: Any, make_cube: Callable[..., Any], tmp_path: Path) -> None:
    src = memos_dir(tmp_path / "memos", tree_dump(), config("tree_text"), pickles=False)
    import_memos(cube, src)
    out = tmp_path / "out"
    assert export_memos(cube, out) == 3  # the archived node too, marked archived
    data = json.loads((out / "textual_memory.json").read_text())
    assert {n["id"]: n["metadata"]["status"] for n in data["nodes"]} == {
        "n-topic": "activated", "n-tennis": "activated", "n-old": "archived"}
    def order(edges: list[dict[str, str]]) -> list[dict[str, str]]:  # edges are a set: the store keeps its own order
        return sorted(edges, key=lambda e: (e["source"], e["type"], e["target"]))

    assert order(data["edges"]) == order(tree_dump()["edges"])
    copy = make_cube("copy")
    assert import_memos(copy, out) == 3
    assert {n.id for n in copy.neighbors("n-topic")} == {"n-tennis", "n-old"}
    for node_id in ("n-topic", "n-tennis", "n-old"):
        a, b = cube.get(node_id), copy.get(node_id)
        assert (a.text, a.metadata, a.tags, a.sources, a.created_at, a.state) == (
            b.text, b.metadata, b.tags, b.sources, b.created_at, b.state)


def test_hostile_directories_are_refused(cube: Any, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps([p["payload"] for p in general_points()]))
    cases: list[tuple[str, Callable[[Path], Any], type[Exception], str]] = [
        ("path trick in memory_filename",
         lambda d: memos_dir(d, [], config(memory_filename="../outside.json"), pickles=False), InvalidInputError, "plain file name"),
        ("absolute memory_filename",
         lambda d: memos_dir(d, [], config(memory_filename=str(outside)), pickles=False), InvalidInputError, "plain file name"),
        ("text file is a link out", _linked_out(outside), InvalidInputError, "link"),
        ("config not an object", lambda d: memos_dir(d, [], [1, 2], pickles=False), InvalidTypeError, "config.json"),
        ("text a number", lambda d: memos_dir(d, 7, pickles=False), InvalidTypeError, "general_text"),
        ("nodes hold a string", lambda d: memos_dir(d, {"nodes": ["x"]}, pickles=False), InvalidTypeError, r"nodes\[0\]"),
        ("memory missing", lambda d: memos_dir(d, [{"id": "a", "metadata": {}}], pickles=False), InvalidTypeError, "memory"),
        ("status unknown", lambda d: memos_dir(d, [{"id": "a", "memory": "x", "metadata": {"status": "zombie"}}], pickles=False),
         InvalidInputError, "zombie"),
        ("confidence a string", lambda d: memos_dir(d, [{"id": "a", "memory": "x", "metadata": {"confidence": "high"}}],
                                                    pickles=False), InvalidTypeError, "confidence"),
        ("edge to nowhere", lambda d: memos_dir(d, {"nodes": [{"id": "a", "memory": "x"}],
                                                    "edges": [{"source": "a", "target": "ghost", "type": "PARENT"}]},
                                                pickles=False), InvalidInputError, "ghost"),
        ("id twice", lambda d: memos_dir(d, [{"id": "a", "memory": "x"}, {"id": "a", "memory": "y"}], pickles=False),
         InvalidInputError, "twice"),
        ("a stray .pkl", _with_stray_pickle, InvalidInputError, "notes.pkl"),
        ("not a cube", lambda d: d.mkdir(), InvalidInputError, "neither config.json"),
    ]
    for n, (_name, make, error, match) in enumerate(cases):
        d = tmp_path / f"case{n}"
        make(d)
        with pytest.raises(error, match=match):
            import_memos(cube, d)
    with pytest.raises(InvalidInputError, match="not a directory"):
        import_memos(cube, outside)
    big = memos_dir(tmp_path / "big", [{"id": str(i), "memory": "x" * 50} for i in range(100)], pickles=False)
    with pytest.raises(InvalidInputError, match="over the"):
        import_memos(cube, big, max_bytes=2000)
    assert cube.stats()["items"] == 0 and cube.stats()["edges"] == 0
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(InvalidInputError, match="not empty"):
        export_memos(cube, tmp_path / "full")


def _linked_out(target: Path) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        memos_dir(d, [], pickles=False)
        (d / "textual_memory.json").unlink()
        os.symlink(target, d / "textual_memory.json")
    return make


def _with_stray_pickle(d: Path) -> None:
    memos_dir(d, [], pickles=False)
    (d / "notes.pkl").write_bytes(b"\x80\x04.")


def test_cli_import_and_export(cube: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from memos_integrations.cli import main

    src = memos_dir(tmp_path / "memos", general_points())
    target = tmp_path / "cli_cube"
    assert main(["import", "--from", "memos", str(src), str(target)]) == 2  # the pickle: refused, one line
    assert "activation_memory.pickle" in capsys.readouterr().err
    assert main(["import", "--from", "memos", "--skip-pickles", str(src), str(target)]) == 0
    assert main(["export", "--to", "mem0", str(target), str(tmp_path / "mem0.json")]) == 0
    results = json.loads((tmp_path / "mem0.json").read_text())["results"]
    assert {r["id"] for r in results} == {EIFFEL, TENNIS}
    assert main(["export", "--to", "memos", str(target), str(tmp_path / "back")]) == 0
    assert "wrote 2 memories" in capsys.readouterr().out
