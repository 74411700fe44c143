"""kill -9 at random moments of a cube that defers its vector-index writes (textual/index_defer.py) and drains
them in the background: whatever moment the kill hits (inside an add, between the commit and the drain, in
the middle of a background Chroma upsert), reopening finds every acknowledged add once, in SQLite and in the
index. Rounds share MEMOS_STRESS_SECONDS (default 240) with the other stress tests; each takes ~5 s.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from memos_integrations import MemCube

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = max(3, int(float(os.environ.get("MEMOS_STRESS_SECONDS", "240")) / 40))

WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from memos_integrations import MemCube
    from memos_integrations.textual import index_defer as D

    D.DRAIN_AT, D.MAX_AGE = 3, 0.2  # drains all the time: the kill often lands inside one
    cube = MemCube.open({path!r})
    D.defer_writes(cube.text_mem)
    n = 0
    while True:
        item = cube.add(memory=f"round {round} note {{n}}: the courier left parcel {{n}} at door {{n % 7}}.", user_id="kim")[0]
        print(item.id, flush=True)  # acknowledged
        n += 1
    """
)


def test_kill_9_at_random_moments_of_a_deferred_cube(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cube"
    MemCube.init_from_dir(path, embedder=embedder).close()
    acknowledged: set[str] = set()
    rng = random.Random(13)
    for round_ in range(ROUNDS):
        proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), path=str(path), round=round_)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()  # the cube is open and writing
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        acknowledged |= {first, *out.split()}
        with MemCube.open(path, embedder=embedder) as cube:  # replays the outbox
            live = {i.id for i in cube.get_all()}
            assert acknowledged <= live, f"round {round_}: lost {sorted(acknowledged - live)[:5]}"
            assert cube.store.outbox() == []
            assert cube.index.ids() == live and cube.index.count() == len(live) == cube.store.count()
            assert all(len(cube.history(i)) == 1 for i in list(acknowledged)[:50])  # never doubled
