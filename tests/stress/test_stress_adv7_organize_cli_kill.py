"""Adversary, session 7: ``memcube organize`` (the real command, in its own process) killed with SIGKILL
while it writes, then run again: it resumes (redoes only the users it had not finished), writes no
duplicate summaries, serves nothing stale in between, and ends with the tree an uninterrupted run
writes from the same cube. In ``make stress`` (94 s: 24 users through the real CLI); ``make test`` has the
in-process kill (tests/integration/test_organize_kill.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from memos_integrations import MemCube
from memos_integrations.items import LIVE_STATES, Kind
from memos_integrations.organize import stale_summaries

ROOT = Path(__file__).resolve().parents[2]  # the repository (tests/stress/../..)
USERS = [f"user{n:02d}" for n in range(24)]
TOPICS = [
    ["{u} adopted a beagle puppy called Pixel.", "Pixel the beagle loves chasing squirrels in the park.",
     "{u} takes the dog Pixel to the vet every spring.", "Pixel the beagle sleeps on the sofa."],
    ["{u} bakes sourdough bread every Sunday.", "{u} is learning to bake croissants with butter.",
     "The sourdough starter needs feeding twice a day."],
    ["{u} lives in Lisbon.", "{u} lives in Porto.", "{u} works at a bakery in Porto."],
]


def _cli(path: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "memos_integrations.cli", "organize", str(path), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished_since(db: Path, since: float) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT value FROM kv WHERE collection = 'organize'").fetchall()
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()
    from datetime import datetime

    return sum(1 for (v,) in rows if datetime.fromisoformat(json.loads(v)["at"]).timestamp() >= since)


def _tree(cube: MemCube) -> dict[str, tuple[str, tuple[str, ...], str]]:
    out = {}
    for u in USERS:
        for s in cube.get_all(kinds=[Kind.SUMMARY], user_id=u):
            if s.state in LIVE_STATES:
                out[s.id] = (s.text, tuple(s.sources), s.state.value)
    return out


def _edges(cube: MemCube) -> set[tuple[str, str, str, str]]:
    rows = cube.store.db.read("SELECT src, type, dst, metadata FROM edges")
    return {(r[0], r[1], r[2], r[3]) for r in rows}


def test_memcube_organize_killed_mid_run_resumes_with_the_same_tree(tmp_path: Path, embedder: Any) -> None:
    path = tmp_path / "cube"
    cube = MemCube.init_from_dir(path, embedder=embedder)
    added = {}
    for u in USERS:
        added[u] = []
        for n, topic in enumerate(TOPICS):
            added[u] += cube.add(memory=[t.format(u=u.capitalize()) for t in topic], user_id=u, session_id=f"s{n}")
    cube.organize(reader=None)
    for u in USERS:                        # every user's tree goes stale: a member deleted, another edited
        cube.delete(added[u][1].id)
        cube.update(added[u][4].id, text=f"{u.capitalize()} stopped baking and now buys bread.")
    cube.close()
    reference = tmp_path / "reference"
    shutil.copytree(path, reference)

    started = time.time()
    proc = _cli(path)
    killed_after = None
    while proc.poll() is None and time.time() - started < 240:
        done = _finished_since(path / "memory.db", started)
        if done >= 3:
            proc.send_signal(signal.SIGKILL)
            killed_after = done
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert killed_after is not None and proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr.read()[-2000:])

    done_before = _finished_since(path / "memory.db", started)
    probe = tmp_path / "probe"                 # a search hit counts as use (a rerun redoes its user): probe a copy
    shutil.copytree(path, probe)
    with MemCube.open(probe, embedder=embedder) as cube:
        # between the kill and the rerun: no live summary that is stale is a search hit
        for u in USERS:
            live = [s for s in cube.get_all(kinds=[Kind.SUMMARY], user_id=u) if s.state in LIVE_STATES]
            stale = stale_summaries(cube.store, live)
            hits = cube.search("Where does the beagle Pixel sleep and what about bread?", user_id=u, plan="fast",
                               top_k=10)
            assert not stale & {h.item.id for h in hits}, u
    rerun = _cli(path)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    report = json.loads(out)
    assert report["users"] == len(USERS) - done_before and report["users_skipped"] == done_before

    ref = _cli(reference)
    ref_out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-2000:]
    with MemCube.open(path, embedder=embedder) as cube, MemCube.open(reference, embedder=embedder) as clean:
        assert _tree(cube) == _tree(clean)            # same summaries, texts and sources: no duplicate, none stale
        assert _edges(cube) == _edges(clean)
        for u in USERS:
            live = [s for s in cube.get_all(kinds=[Kind.SUMMARY], user_id=u) if s.state in LIVE_STATES]
            assert stale_summaries(cube.store, live) == set()
            episodes = [s.metadata["session_id"] for s in live if s.metadata["summary"] == "episode"]
            assert sorted(episodes) == ["s0", "s1", "s2"]
            members = [m for s in live if s.metadata["summary"] == "topic" for m in s.sources]
            assert len(members) == len(set(members))   # a memory sits in one topic at most
        again = cube.organize(reader=None, full=True)
        assert again.topics_written == again.episodes_written == again.links_added == again.links_removed == 0
