"""The organiser killed with SIGKILL mid-run: nothing stale is served as current, the next run resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from memos_integrations import MemCube
from memos_integrations.items import LIVE_STATES, Kind
from memos_integrations.organize import organize, stale_summaries

ROOT = Path(__file__).resolve().parents[2]
DOGS = ["Maya adopted a beagle puppy called Pixel.", "Pixel the beagle loves chasing squirrels in the park.",
        "Maya takes her dog Pixel to the vet every spring."]
BREAD = ["Maya bakes sourdough bread every Sunday.", "Maya is learning to bake croissants with butter."]

#: opens the cube and organises it, killing itself (SIGKILL: no cleanup, no atexit) just before the
#: N-th summary write
CHILD = textwrap.dedent("""
    import os, signal, sys
    from memos_integrations import MemCube
    from memos_integrations.organize import organize
    cube = MemCube.open(sys.argv[1])
    real = cube.text_mem.add_items
    calls = []
    def dying(*args, **kw):
        calls.append(1)
        if len(calls) == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kw)
    cube.text_mem.add_items = dying
    organize(cube)
    print("finished without being killed")
""")


def live_summaries(cube: MemCube, user: str) -> list:  # type: ignore[type-arg]
    return [s for s in cube.get_all(kinds=[Kind.SUMMARY], user_id=user) if s.state in LIVE_STATES]


def test_kill_9_mid_run_leaves_nothing_stale_live_and_the_next_run_resumes(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cube"
    cube = MemCube.init_from_dir(path, embedder=embedder)
    users = ["a", "b", "c"]
    added = {u: cube.add(memory=[*DOGS, *BREAD], user_id=u, session_id="s1") for u in users}
    organize(cube)
    for u in users:                                  # every user's dog topic and episode go stale
        cube.delete(added[u][1].id)
    cube.close()

    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr

    with MemCube.open(path, embedder=embedder) as cube:
        # a: rebuilt before the kill; b: marked stale, killed before its rebuild; c: not reached
        for u in ("a", "b"):
            assert stale_summaries(cube.store, live_summaries(cube, u)) == set()
        assert len(live_summaries(cube, "a")) == 3 and len(live_summaries(cube, "b")) == 1   # b: bread topic only
        assert len(stale_summaries(cube.store, live_summaries(cube, "c"))) == 2   # c: seen stale at read time
        report = organize(cube)                      # resumes: a is done, b and c are redone
        assert (report.users, report.users_skipped) == (2, 1)
        for u in users:
            summaries = live_summaries(cube, u)
            assert len(summaries) == 3 and stale_summaries(cube.store, summaries) == set()
            assert all(added[u][1].id not in s.sources for s in summaries)
            assert all(cube.get(i).user_id == u for s in summaries for i in s.sources)
        again = organize(cube, full=True)            # a fixed point: nothing left to write
        assert again.topics_written == again.episodes_written == again.links_added == again.links_removed == 0
        assert again.stale_marked == again.summaries_archived == 0
