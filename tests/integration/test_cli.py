"""The `memcube` command line, run as a user runs it: a separate process per command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def memcube(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memos_integrations.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_round_trip(tmp_path: Path) -> None:
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
    shown = json.loads(memcube("show", "cube", memory_id, cwd=tmp_path).stdout)
    assert shown["metadata"]["refers_to"][0]["from"] == "2023-05-07"
    assert memcube("history", "cube", memory_id, cwd=tmp_path).stdout.startswith("v1 ")
    assert memcube("export", "cube", "out.jsonl", cwd=tmp_path).returncode == 0
    assert memcube("import", "copy", "out.jsonl", cwd=tmp_path).returncode == 0
    stats = json.loads(memcube("stats", "copy", cwd=tmp_path).stdout)
    assert stats["items"] == 2 and stats["vectors_indexed"] == 2 and stats["edges"] == 1
    assert "2 items" in memcube("reindex", "copy", cwd=tmp_path).stdout


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = memcube("search", "nowhere", "anything", cwd=tmp_path)
    assert missing.returncode == 2 and "CubeNotFoundError" in missing.stderr and "Traceback" not in missing.stderr
    memcube("init", "cube", cwd=tmp_path)
    (tmp_path / "bad.json").write_text('[{"role": "user", "content": "   "}]')
    empty = memcube("add", "cube", "bad.json", "--quiet", cwd=tmp_path)
    assert empty.returncode == 2 and "EmptyTextError" in empty.stderr
    assert json.loads(memcube("stats", "cube", cwd=tmp_path).stdout)["items"] == 0


def test_demo_runs_offline_and_shows_what_it_promises(tmp_path: Path) -> None:
    out = memcube("demo", "--dir", str(tmp_path / "demo"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "new process found" in text and "sources=['S1:7']" in text     # persistence across processes
    assert "refused: user 'leo' may not search" in text and "allowed=False" in text  # access control + audit
    assert "a read share cannot write" in text
    assert "v2:" in text                                                 # versions
