"""The `memcube` command line, run as a user runs it: a separate process per command where the process
matters (a cube written by one process and read by the next, the exit status and the one-line error a
shell sees). The follow-up commands on the same cube run through the same ``main(argv)`` in-process:
each separate process costs ~3 s of CPU for its imports alone, and the cube they read was still
written by other processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from memos_integrations.cli import main


def memcube(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memos_integrations.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``memcube ARGS`` through the console script's ``main``, in this process: its stdout (exit 0 checked)."""
    capsys.readouterr()
    assert main(list(args)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    msgs = [
        {"role": "user", "name": "Caroline", "content": "I went to a support group yesterday.", "id": "D1:3"},
        {"role": "user", "name": "Melanie", "content": "That sounds powerful. How did it feel?", "id": "D1:4"},
    ]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(m) for m in msgs))
    assert memcube("init", "cube", cwd=tmp_path).returncode == 0
    added = memcube("add", "cube", "chat.jsonl", "--user", "caroline", "--session", "s1",
                    "--timestamp", "1:56 pm on 8 May, 2023", cwd=tmp_path)
    assert added.returncode == 0 and "added 2 memories" in added.stdout
    found = memcube("search", "cube", "When did Caroline go to the support group?", "--user", "caroline", "--json", cwd=tmp_path)
    hits = json.loads(found.stdout)
    assert hits[0]["item"]["sources"] == ["D1:3"] and hits[0]["item"]["event_time"].startswith("2023-05-08T13:56")
    memory_id = hits[0]["item"]["id"]
    monkeypatch.chdir(tmp_path)  # the rest in-process, on the cube the processes above wrote
    shown = json.loads(in_process(capsys, "show", "cube", memory_id))
    assert shown["metadata"]["refers_to"][0]["from"] == "2023-05-07"
    assert in_process(capsys, "history", "cube", memory_id).startswith("v1 ")
    assert "wrote" in in_process(capsys, "export", "cube", "out.jsonl")
    assert "imported 2 memories" in in_process(capsys, "import", "copy", "out.jsonl")
    stats = json.loads(in_process(capsys, "stats", "copy"))
    assert stats["items"] == 2 and stats["vectors_indexed"] == 2 and stats["edges"] == 1
    assert "2 items" in in_process(capsys, "reindex", "copy")


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    missing = memcube("search", "nowhere", "anything", cwd=tmp_path)
    assert missing.returncode == 2 and "CubeNotFoundError" in missing.stderr and "Traceback" not in missing.stderr
    memcube("init", "cube", cwd=tmp_path)  # a process of its own: an open cube is held by its process
    (tmp_path / "bad.json").write_text('[{"role": "user", "content": "   "}]')
    empty = memcube("add", "cube", "bad.json", "--quiet", cwd=tmp_path)
    assert empty.returncode == 2 and "EmptyTextError" in empty.stderr
    monkeypatch.chdir(tmp_path)
    assert json.loads(in_process(capsys, "stats", "cube"))["items"] == 0


def test_demo_runs_offline_and_shows_what_it_promises(tmp_path: Path) -> None:
    out = memcube("demo", "--dir", str(tmp_path / "demo"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "new process found" in text and "sources=['S1:7']" in text     # persistence across processes
    assert "refused: user 'leo' may not search" in text and "allowed=False" in text  # access control + audit
    assert "a read share cannot write" in text
    assert "v2:" in text                                                 # versions
