"""The serving process's GC settling (server/gc_settle.py): called once per cube opened; freezes in a child process.

Freezing is process-wide and permanent, so the freeze itself is checked in a fresh interpreter, never in the
test process (it would keep every later test's cyclic garbage).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from memos_integrations.errors import InvalidInputError
from memos_integrations.mos import MOS


def test_on_open_sees_each_cube_once_when_it_opens(tmp_path: Path, embedder: Any) -> None:
    with MOS(tmp_path / "home", embedder=embedder) as mos:
        mos.create_user("alice")
        cube_id = mos.create_cube_for_user("notes", owner_id="alice")
        mos.add(memory_content="alice likes genmaicha", mem_cube_id=cube_id, user_id="alice")
    with MOS(tmp_path / "home", embedder=embedder) as mos:
        opened: list[Any] = []
        mos.on_open = opened.append
        with pytest.raises(InvalidInputError, match="memory_content="):  # MemCube.add's name: was a TypeError
            mos.add(memory="x", mem_cube_id=cube_id, user_id="alice")
        for _ in range(3):
            assert mos.search("tea", user_id="alice")
        assert len(opened) == 1 and opened[0].path == mos._cube(cube_id).path  # noqa: SLF001 - the open cube


def test_settle_collects_cyclic_garbage_then_freezes_the_survivors() -> None:
    script = (
        "import gc, weakref\n"
        "from memos_integrations.server import gc_settle\n"
        "class Node: pass\n"
        "a = Node(); a.me = a; dead = weakref.ref(a); del a\n"   # cyclic garbage: collected, not frozen
        "kept = Node(); kept.me = kept\n"
        "gc_settle.settle()\n"
        "assert dead() is None, 'cyclic garbage was frozen instead of collected'\n"
        "assert gc.get_freeze_count() > 0\n"
        "assert gc.get_count()[0] < 50\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
