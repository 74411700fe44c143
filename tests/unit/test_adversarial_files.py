"""Cube files are data, never trusted paths: tampered, damaged or half-written files are refused
(CubeCorruptedError), read as empty with a warning where the data is derived (KV caches, routes), and
nothing a cube file names is ever read or deleted outside the cube (issue 15, items 7-9, 14, 15)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.cli import main as cli_main
from memos_integrations.cube import INCOMPLETE_FILE, collection_name
from memos_integrations.errors import CubeCorruptedError, ItemNotFoundError

ROOT = Path(__file__).resolve().parents[2]


# -- memory.db: zero-byte, truncated, garbled ------------------------------------------------------
@pytest.fixture(scope="module")
def fifty(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Path:
    """A closed cube of 50 memories; each test damages its own copy."""
    path = tmp_path_factory.mktemp("fifty") / "cube"
    with MemCube.init_from_dir(path, embedder=embedder) as cube:
        cube.add(memory=[f"memory {i}: the tide table for harbour {i}" for i in range(50)], user_id="u")
    return path


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(src, dst))


def _garble(db: Path) -> None:
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    rng = random.Random(7)
    for p in (len(data) // page // 2, len(data) // page // 3):
        for i in range(p * page, p * page + 200):
            data[i] = rng.randrange(256)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["zero-byte", "truncated", "garbled", "not-sqlite"])
def test_damaged_memory_db_is_refused_at_open_and_the_index_is_kept(
        fifty: Path, tmp_path: Path, embedder: Any, damage: str) -> None:
    path = _copy(fifty, tmp_path / "cube")
    db = path / "memory.db"
    good = db.read_bytes()
    if damage == "zero-byte":
        db.write_bytes(b"")
    elif damage == "truncated":
        db.write_bytes(good[: len(good) // 2])
    elif damage == "garbled":
        _garble(db)
    else:
        db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CubeCorruptedError, match="restore it from a dump or export"):
        MemCube.open(path, embedder=embedder)
    # nothing was written: restoring the file gives the cube back, vectors included (reconcile did not
    # empty the index against an "empty" database)
    db.write_bytes(good)
    with MemCube.open(path, embedder=embedder) as cube:
        assert cube.stats()["items"] == 50 and cube.index.count() == 50
        assert cube.audit_log(principal="system") == []  # no reconcile happened on any open


# -- dump / clone -----------------------------------------------------------------------------------
_KILLED_DUMP = textwrap.dedent("""
    import os, shutil, signal, sys
    from memos_integrations import MemCube
    from memos_integrations.textual.embed import MiniLMEmbedder

    real = shutil.copytree
    def copytree(src, dst, *a, **kw):
        out = real(src, dst, *a, **kw)
        if str(src).endswith("kv"):
            os.kill(os.getpid(), signal.SIGKILL)  # the process dies between kv/ and adapters/
        return out
    shutil.copytree = copytree
    cube = MemCube.open(sys.argv[1], embedder=MiniLMEmbedder())
    cube.dump(sys.argv[2])
""")


def test_a_killed_dump_leaves_no_cube_that_opens(fifty: Path, tmp_path: Path, embedder: Any) -> None:
    path = _copy(fifty, tmp_path / "cube")
    (path / "kv").mkdir()
    (path / "kv" / "index.json").write_text(json.dumps({"format": 1, "entries": {}}))
    (path / "adapters" / "team").mkdir(parents=True)
    (path / "adapters" / "team" / "manifest.json").write_text("{}")
    target = tmp_path / "backup"
    run = subprocess.run([sys.executable, "-c", _KILLED_DUMP, str(path), str(target)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == -9, run.stderr
    assert not target.exists(), "a killed dump must not leave a cube at the target"
    (partial,) = [p for p in tmp_path.iterdir() if p.name.startswith(".backup.")]
    assert (partial / INCOMPLETE_FILE).exists()
    with pytest.raises(CubeCorruptedError, match="incomplete dump"):
        MemCube.open(partial, embedder=embedder)


def test_dump_is_complete_and_leaves_nothing_aside(cube: MemCube, tmp_path: Path) -> None:
    cube.add(memory="Alice likes genmaicha tea.", user_id="alice")
    (cube.path / "kv").mkdir()
    (cube.path / "kv" / "index.json").write_text(json.dumps({"format": 1, "entries": {}}))
    os.symlink("/etc/hostname", cube.path / "kv" / "outside")  # a link is a path, not data: not copied
    (tmp_path / "empty").mkdir()
    with cube.dump(tmp_path / "empty") as copy:  # an existing empty directory is fine
        assert copy.search("tea", user_id="alice")[0].item.text == "Alice likes genmaicha tea."
        assert not (copy.path / INCOMPLETE_FILE).exists()
        assert (copy.path / "kv" / "index.json").exists() and not (copy.path / "kv" / "outside").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# -- KV index: tampered paths, damaged structure ---------------------------------------------------
torch_needed = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="needs the [local] extra (torch)")


def _kv_with_one_cache(directory: Path) -> tuple[Any, Any, list[int]]:
    import torch

    from memos_integrations.activation import ActivationMemory, kv
    from memos_integrations.models.testing import tiny_causal_lm

    torch.set_num_threads(1)
    model = tiny_causal_lm("llama")
    mem = ActivationMemory(directory)
    ids = list(range(20))
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), past_key_values=kv.new_cache(model.config), use_cache=True)
    mem.store(model, "t", ids, out.past_key_values)
    mem.flush()
    return model, mem, ids


@torch_needed
@pytest.mark.parametrize("target", ["../memory.db", "ABSOLUTE", "sub/../../memory.db"])
def test_tampered_kv_index_never_reads_or_deletes_outside_kv(tmp_path: Path, target: str) -> None:
    from memos_integrations.activation import ActivationMemory

    cube_dir = tmp_path / "cube"
    model, _, ids = _kv_with_one_cache(cube_dir / "kv")
    victim = cube_dir / "memory.db"
    victim.write_bytes(b"the source of truth")
    index = cube_dir / "kv" / "index.json"
    raw = json.loads(index.read_text())
    (row,) = raw["entries"].values()
    row["file"] = str(victim) if target == "ABSOLUTE" else target
    index.write_text(json.dumps(raw))
    mem = ActivationMemory(cube_dir / "kv")
    lease = mem.lookup(model, "t", ids + [5])  # on main: checksum fails, the "entry" is deleted
    assert lease.source == "miss"
    assert victim.read_bytes() == b"the source of truth"
    assert mem.drop("t") == 0 and victim.exists()  # the tampered row is not an entry at all


@torch_needed
@pytest.mark.parametrize("body", ["[]", "null", '"x"', '{"format": 1, "entries": []}', '{"format": 1}',
                                  '{"format": 1, "entries": {"a": [1]}}', "[" * 100_000])
def test_damaged_kv_index_is_a_miss_or_a_clear_error_never_attribute_error(tmp_path: Path, body: str) -> None:
    from memos_integrations.activation import ActivationMemory

    model, _, ids = _kv_with_one_cache(tmp_path / "kv")
    (tmp_path / "kv" / "index.json").write_text(body)
    mem = ActivationMemory(tmp_path / "kv")
    assert mem.lookup(model, "t", ids + [1]).source == "miss"  # the documented fallback: recompute
    try:  # a damaged index is CubeCorruptedError; a damaged row is no entry at all (ItemNotFoundError)
        mem.threads()
        mem.load(model, "t")
    except (CubeCorruptedError, ItemNotFoundError):
        pass
    except Exception as exc:  # pragma: no cover - the failure this test exists for
        pytest.fail(f"{type(exc).__name__}: {exc}")
    # a new spill replaces a damaged index (caches are derived data)
    _, fresh, _ = _kv_with_one_cache(tmp_path / "kv")
    assert fresh.threads() == ["t"]


@torch_needed
def test_damaged_routes_json_routes_to_no_assignment_and_refuses_to_overwrite(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm
    from memos_integrations.parametric import ParametricMemory

    pm = ParametricMemory(tmp_path / "adapters")
    pm.bind(tiny_causal_lm("llama"), byte_tokenizer())
    (tmp_path / "adapters").mkdir(exist_ok=True)
    for body in ("[]", "null", "{not json", '{"alice": ["x"]}', '{"alice": "../../etc"}'):
        (tmp_path / "adapters" / "routes.json").write_text(body)
        assert pm.adapter_for("alice") is None and pm.route("alice") is None
    (tmp_path / "adapters" / "routes.json").write_text("[]")
    with pytest.raises(CubeCorruptedError, match="routes.json"):
        pm.assign("alice", None)
    assert (tmp_path / "adapters" / "routes.json").read_text() == "[]"


@torch_needed
def test_adapter_folders_that_link_outside_or_misname_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm
    from memos_integrations.parametric import ParametricMemory

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "adapters" / "other").mkdir(parents=True)
    (tmp_path / "adapters" / "other" / "manifest.json").write_text(json.dumps({"name": "victim", "base_fingerprint": "f", "base_dtype": "float32"}))
    os.symlink(outside, tmp_path / "adapters" / "linked")
    pm = ParametricMemory(tmp_path / "adapters")
    pm.bind(tiny_causal_lm("llama"), byte_tokenizer())
    assert pm.adapters() == []
    assert "outside" in pm.refused["linked"] and "named 'victim'" in pm.refused["other"]


# -- collection names --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["notes_", "notes-", "café", "x", "a..b", "192.168.0.1", "日本語のノート", "_"])
def test_any_directory_name_makes_a_working_cube(tmp_path: Path, embedder: Any, name: str) -> None:
    with MemCube.init_from_dir(tmp_path / name, embedder=embedder) as cube:
        cube.add(memory="Alice likes genmaicha tea.", user_id="alice")
        assert cube.search("tea", user_id="alice")[0].item.text == "Alice likes genmaicha tea."
    with MemCube.open(tmp_path / name, embedder=embedder) as cube:
        assert cube.index.count() == 1 and cube.audit_log(principal="system") == []


def test_collection_names_of_existing_cubes_do_not_change() -> None:
    for cube_id in ("cube", "notes", "alice.v2", "team-a_1", "x" * 80):
        legacy = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in f"cube_{cube_id}")[:60]
        assert collection_name(f"cube_{cube_id}") == legacy
    assert collection_name("cube_notes_") != collection_name("cube_notes-")  # distinct names stay distinct


# -- CLI arguments ---------------------------------------------------------------------------------
def test_cli_binary_or_directory_arguments_are_one_line_errors(
        tmp_path: Path, embedder: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    MemCube.init_from_dir(tmp_path / "cube", embedder=embedder).close()
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "folder").mkdir()
    (tmp_path / "far.json").write_text(json.dumps([{"role": "user", "content": "hello"}]))
    monkeypatch.chdir(tmp_path)
    for argv in (["add", "cube", "binary.bin", "--quiet"], ["add", "cube", "folder", "--quiet"],
                 ["import", "cube", "binary.bin"], ["import", "cube", "folder"], ["export", "cube", "folder"],
                 ["search", "binary.bin", "q"], ["add", "cube", "far.json", "--quiet",
                                                 "--timestamp", "9999-12-31T23:59:59-14:00"]):
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("memcube: "), (argv, err)
    with MemCube.open(tmp_path / "cube", embedder=embedder) as cube:
        assert cube.stats()["items"] == 0


def test_a_cube_holding_an_unrepresentable_time_still_reads(cube: MemCube, caplog: pytest.LogCaptureFixture) -> None:
    """A time written before validation existed (year 10000 once in UTC) is read clamped, with a warning."""
    from memos_integrations.items import MAX_TIME

    item = cube.add(memory="written by an older version", timestamp="2023-05-08")[0]
    with cube.store.transaction() as c:
        c.execute("UPDATE items SET event_time=? WHERE id=?", (253402351199.0 + 86400, item.id))
    assert cube.get(item.id).event_time == MAX_TIME
    assert "outside datetime's range" in caplog.text
    assert cube.search("older version", top_k=1)[0].item.id == item.id
    assert len(list(cube.export_jsonl())) == 1  # type: ignore[arg-type]
