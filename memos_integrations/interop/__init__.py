"""Import and export in the shapes other memory systems write: a mem0 export file and a MemOS cube directory.

Where it sits: outside the engine. Each format module turns the foreign shape into the rows
:meth:`MemCube.export_jsonl` writes and loads them with :meth:`MemCube.import_jsonl`, so an import is
checked like every other write (one bad record refuses the whole file, nothing half-written) and keeps
each memory's versions. Exports read the cube's public methods only.

- :mod:`.mem0`: ``{"results": [...memories...], "history": [...rows...]}`` (mem0's ``get_all`` output,
  plus ``history`` rows where present).
- :mod:`.memos`: a MemOS cube directory (``config.json`` and ``textual_memory.json`` of general or tree
  memories). Its pickled activation memory (``activation_memory.pickle``) and adapters are never loaded.

Files from elsewhere are untrusted: sizes are capped before reading, every field's type is checked, file
names named inside a directory cannot leave it, and nothing is unpickled.

Example:
    >>> import tempfile, json, pathlib
    >>> from memos_integrations import MemCube
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "mem0.json").write_text(json.dumps({"results": [
    ...     {"id": "m1", "memory": "Likes genmaicha", "user_id": "alice", "created_at": "2024-07-20T01:30:00Z"}]}))
    >>> cube = MemCube.init_from_dir(tmp / "cube")
    >>> import_from("mem0", cube, tmp / "mem0.json")
    1
    >>> cube.get("m1").text, cube.get("m1").user_id
    ('Likes genmaicha', 'alice')
    >>> cube.close()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

FORMATS = ("mem0", "memos")


def import_from(fmt: str, cube: Any, src: str | Path, **options: Any) -> int:
    """Import ``src`` (a mem0 export file, or a MemOS cube directory) into ``cube``; returns how many memories.

    ``options`` go to the format's importer (``max_bytes``; for MemOS ``skip_pickles``).
    """
    if fmt == "mem0":
        from .mem0 import import_mem0

        return import_mem0(cube, src, **options)
    if fmt == "memos":
        from .memos import import_memos

        return import_memos(cube, src, **options)
    raise InvalidInputError(f"unknown import format {fmt!r}; use one of {list(FORMATS)}")


def export_to(fmt: str, cube: Any, dst: str | Path, **options: Any) -> int:
    """Export ``cube`` to ``dst`` (a mem0 export file, or a new MemOS cube directory); returns how many memories."""
    if fmt == "mem0":
        from .mem0 import export_mem0

        return export_mem0(cube, dst, **options)
    if fmt == "memos":
        from .memos import export_memos

        return export_memos(cube, dst, **options)
    raise InvalidInputError(f"unknown export format {fmt!r}; use one of {list(FORMATS)}")
