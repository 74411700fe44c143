# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
"""``memcube migrate``: a cube copied SQLite -> PostgreSQL -> SQLite keeps every version, edge, audit row,
kv row and checkpoint; an interrupted copy resumes; the copies search like the original."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube, MemoryFilter
from memos_integrations.config import postgres_store
from memos_integrations.storage import transfer
from tests.pg_server import drop_schema, postgres_dsn  # noqa: F401


@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(postgres_dsn, name)


def everything(cube: Any) -> dict[str, Any]:
    """What a lossless copy must keep: the export (every version, edge), audit, kv, checkpoints. The copy's
    own reconcile entries (the resumed run opened a half-copied cube) are its history, not the source's."""
    audit = [{k: v for k, v in e.items() if k != "seq"} for e in cube.audit_log(limit=10_000)
             if not (e["action"] == "reconcile" and e["detail"].get("added"))]
    checkpoints = sorted(map(tuple, cube.store.db.read(
        "SELECT thread_id, checkpoint_id, type, checkpoint, metadata FROM lg_checkpoints")))
    return {"export": list(cube.export_jsonl()), "audit": audit, "kv": cube.store.kv_all("notes"),
            "checkpoints": checkpoints}


def populate(cube: Any) -> None:
    from langgraph.checkpoint.base import empty_checkpoint

    from memos_integrations.langgraph import MemOSSaver

    msgs = cube.add(messages=[{"role": "user", "content": "I moved to Porto in May."},
                              {"role": "assistant", "content": "How is the weather there?"}],
                    user_id="ana", session_id="s1")
    fact = cube.add(memory="Ana lives in Porto.", user_id="ana", tags=["home"], metadata={"n": [1, {"x": None}]})[0]
    cube.update(fact.id, text="Ana lives in Porto, near the river.")
    cube.delete([cube.add(memory="a passing thought", user_id="ana")[0].id])
    cube.relate(fact.id, msgs[0].id, "derived_from", weight=0.5)
    cube.store.kv_put("notes", {"a": {"deep": [1, 2]}, "b": "x"})
    saver = MemOSSaver(cube)
    config: Any = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
    saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})


def test_sqlite_to_postgres_and_back_is_lossless(tmp_path: Path, postgres_dsn: str, schema: str, embedder: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    original = MemCube.init_from_dir(tmp_path / "orig", embedder=embedder)
    populate(original)
    before = everything(original)
    original.close()

    monkeypatch.setattr(transfer, "PAGE", 2)  # many pages: the resume has something to resume
    calls = {"n": 0}

    def interrupt(table: str, done: int, total: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed mid-copy

    with pytest.raises(KeyboardInterrupt):
        transfer.migrate_cube(tmp_path / "orig", tmp_path / "pg", postgres_store(postgres_dsn, schema=schema),
                              interrupt, embedder=embedder)
    seen: list[tuple[str, int, int]] = []
    counts = transfer.migrate_cube(tmp_path / "orig", tmp_path / "pg", None, lambda *a: seen.append(a),
                                   embedder=embedder)  # resumed (the store is the one recorded)
    assert seen and seen[0][1] > 2  # it did not start again from the first page
    assert counts["items"] == 4 and counts["indexed"] == 3  # the deleted one is not indexed
    with MemCube.open(tmp_path / "pg", embedder=embedder) as pg:
        assert type(pg.store).__name__ == "PostgresStore"
        assert everything(pg) == before
        assert pg.search("where does Ana live", user_id="ana")[0].item.text == "Ana lives in Porto, near the river."
        assert len(pg.store.keyword_search(["river"], MemoryFilter(), 5)) == 1  # its own keyword index, rebuilt
    transfer.migrate_cube(tmp_path / "pg", tmp_path / "back", None, embedder=embedder)
    with MemCube.open(tmp_path / "back", embedder=embedder) as back:
        assert type(back.store).__name__ == "SQLiteStore"
        assert everything(back) == before
        assert json.loads((tmp_path / "back" / "cube.json").read_text())["config"]["store"]["backend"] == "sqlite"


def test_the_cli_migrates_with_a_progress_bar(tmp_path: Path, postgres_dsn: str, schema: str, embedder: Any,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from memos_integrations.cli import main

    with MemCube.init_from_dir(tmp_path / "orig", embedder=embedder) as cube:
        cube.add(memory=["Ana lives in Porto.", "Ana plays chess."], user_id="ana")
    assert main(["migrate", str(tmp_path / "orig"), str(tmp_path / "pg"), "--postgres", postgres_dsn,
                 "--schema", schema]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out.strip().splitlines()[-1])["items"] == 2
    assert "items" in out.err and "2/2" in out.err  # the progress bar
    header = json.loads((tmp_path / "pg" / "cube.json").read_text())
    assert header["config"]["store"]["schema_name"] == schema
