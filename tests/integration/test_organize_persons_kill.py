"""The organiser killed with SIGKILL while writing person topics: the next run resumes and ends where an
uninterrupted run ends (same edges), and a rerun changes nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from memos_integrations import MemCube
from memos_integrations.organize import PERSON_TOPIC, OrganizePolicy, organize

ROOT = Path(__file__).resolve().parents[2]
TURNS = [("Mel", "I signed up for a pottery class, clay is like therapy."), ("Cat", "I joined a support group."),
         ("Mel", "My pottery teacher showed me how to glaze a clay bowl."), ("Cat", "I went to a support group again."),
         ("Mel", "I made a clay mug in my pottery class.")]

#: organises with person topics, killing itself (SIGKILL: no cleanup) at the first person_topic write
CHILD = textwrap.dedent("""
    import os, signal, sys
    from memos_integrations import MemCube
    from memos_integrations.organize import OrganizePolicy, organize
    cube = MemCube.open(sys.argv[1])
    real = cube.graph.add_edges
    def dying(edges):
        if any(e.type == "person_topic" for e in edges):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(edges)
    cube.graph.add_edges = dying
    organize(cube, reader=None, policy=OrganizePolicy(person_topics=True))
    print("finished without being killed")
""")


def _edges(cube: MemCube) -> set[tuple[str, str]]:
    """The person topics as (member text, leader text): comparable across cubes."""
    text = {m.id: m.text for m in cube.get_all(user_id="u")}
    return {(text[e.src], text[e.dst]) for e in cube.graph.edges(list(text), "out", [PERSON_TOPIC])}


def test_kill_9_while_writing_person_topics_resumes_to_the_same_edges(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=embedder) as cube:
        msgs = [{"role": "user", "name": who, "content": text, "id": f"t{n}"} for n, (who, text) in enumerate(TURNS)]
        cube.add(messages=msgs, user_id="u", session_id="s1")
        organize(cube, reader=None)                   # organised before, without person topics
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    policy = OrganizePolicy(person_topics=True)
    with MemCube.open(path, embedder=embedder) as cube:
        assert _edges(cube) == set()                  # killed before its write: nothing half-written
        report = organize(cube, reader=None, policy=policy)
        assert report.users == 1 and report.links_added > 0   # not skipped: the killed run never finished
        resumed = _edges(cube)
        assert organize(cube, reader=None, policy=policy).users_skipped == 1
        again = organize(cube, reader=None, policy=policy, full=True)
        assert (again.links_added, again.links_removed) == (0, 0)
    fresh = tmp_path / "fresh"
    with MemCube.init_from_dir(fresh, embedder=embedder) as other:
        other.add(messages=msgs, user_id="u", session_id="s1")
        organize(other, reader=None, policy=policy)
        assert _edges(other) == resumed and resumed
