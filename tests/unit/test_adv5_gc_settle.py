"""MOS.on_open (the serving process's GC settling, server/gc_settle.py) also sees the cubes MOS creates or
registers: a service started on an empty home creates every cube it serves (a user's first add), and those
cubes (with the modules their first use imports: ~42,000 objects for five new cubes, a 37 ms full collection)
were never settled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memos_integrations.cube import MemCube
from memos_integrations.mos import MOS


def test_cubes_created_or_registered_while_serving_are_seen_once(tmp_path: Path, embedder: Any) -> None:
    MemCube.create(tmp_path / "elsewhere", embedder=embedder).close()
    with MOS(tmp_path / "home", embedder=embedder) as mos:
        seen: list[Any] = []
        mos.on_open = seen.append
        mos.create_user("alice")
        created = mos.create_cube_for_user("notes", owner_id="alice")
        registered = mos.register_mem_cube(tmp_path / "elsewhere", user_id="alice", mem_cube_id="old")
        for cube_id in (created, registered):
            mos.add(memory_content="alice likes genmaicha", mem_cube_id=cube_id, user_id="alice")
        assert mos.search("tea", user_id="alice")
        assert [c.path for c in seen] == [mos._cube(created).path, mos._cube(registered).path]  # noqa: SLF001
