"""Copies and files of a :class:`~memos_integrations.cube.MemCube`: ``clone`` / ``dump`` into a new
cube folder, and the JSON-lines export format (``export_jsonl`` / ``import_jsonl``).

This is the cube's file-format code, kept apart from the cube's memory operations: a change to how
a copy is staged, flushed and renamed, or to what an export line holds, is made here. The functions
take the cube they copy, export or import into; ``MemCube`` keeps the public methods as delegates.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CubeCorruptedError, InvalidInputError, InvalidTypeError, MemosError
from .items import Edge, Lifecycle, MemoryItem, validate_edge
from .textual.embed import item_vectors
from .textual.memory import check_item

if TYPE_CHECKING:
    from .cube import MemCube


def clone(cube: MemCube, path: str | Path, cube_id: str | None = None) -> MemCube:
    """Copy this cube to ``path`` (an empty or absent directory) under ``cube_id``.

    The copy is built in a hidden sibling folder marked incomplete and renamed into place
    when whole, so a copy killed half-way is never mistaken for a cube: ``path`` is left
    absent (or empty) and the partial folder is refused by :meth:`MemCube.open`.
    """
    from . import cube as _cube  # cube.py imports this module; the header helpers live there

    target = Path(path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInputError(f"{target} is not empty; dump into a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    config = cube.config.model_copy(update={
        "cube_id": cube_id or target.resolve().name,
        "vector": cube.config.vector.model_copy(update={"mode": "persistent", "collection": None})})
    act = cube.__dict__.get("act_mem")
    if act is not None and hasattr(act, "flush"):
        act.flush()  # caches held in RAM belong in the copy too
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        os.chmod(staging, stat.S_IMODE(cube.path.stat().st_mode))  # mkdtemp makes it owner-only
        (staging / _cube.INCOMPLETE_FILE).write_text(
            f"an incomplete copy of {cube.path} into {target}; delete this folder and dump again\n")
        cube.store.snapshot(staging / "memory.db")  # a consistent copy (SQLite: the backup API)
        header = _cube.read_header(cube.path, verify=False)
        header.update(cube_id=config.cube_id, config=config.to_json_dict())
        (staging / _cube.CUBE_FILE).write_text(json.dumps(header, indent=2))
        for sub in ("kv", "adapters"):
            # links are left out, kv/ or adapters/ itself included: a copy holds data, never paths
            if (cube.path / sub).is_dir() and not (cube.path / sub).is_symlink():
                shutil.copytree(cube.path / sub, staging / sub, ignore=_links)
        _fsync_tree(staging)
        (staging / _cube.INCOMPLETE_FILE).unlink()
        os.replace(staging, target)  # POSIX: an empty target directory is replaced atomically
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    copy = _cube.MemCube.open(target, embedder=cube.embedder)
    copy.reindex()  # vectors are rebuilt from the copied source of truth, never copied half-written
    return copy


def export_jsonl(cube: MemCube, path: str | Path | None = None) -> Iterator[dict[str, Any]] | int:
    """Every version of every item (tombstones included) and every edge, as JSON lines."""
    def rows() -> Iterator[dict[str, Any]]:
        for item_id in list(cube.store.iter_ids()):
            try:
                versions = cube.store.history(item_id)
            except (ValueError, TypeError, KeyError) as exc:  # a version row edited by hand
                raise CubeCorruptedError(
                    f"the versions of memory {item_id!r} are unreadable ({str(exc)[:200]}); the export stopped "
                    "and wrote nothing. Restore memory.db from a dump") from exc
            for version in versions:
                yield {"type": "item", "item": version.to_dict()}
        for e in cube.store.iter_edges():
            yield {"type": "edge", "edge": {"src": e.src, "dst": e.dst, "type": e.type, "weight": e.weight,
                                            "metadata": e.metadata}}
    if path is None:
        return rows()
    out = Path(path)
    n = 0
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:  # written aside and renamed: a failed export never leaves a partial file behind
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows():
                fh.write(_json_line(row))
                n += 1
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def import_jsonl(cube: MemCube, path: str | Path) -> int:
    """Load what :func:`export_jsonl` wrote: versions are restored as they were (lossless).

    Every row is checked as :meth:`MemCube.add` checks its input before anything is written; one bad
    row refuses the whole file (:class:`InvalidInputError` naming the line).
    """
    items: list[MemoryItem] = []
    edges: list[Edge] = []
    for n, row in _export_rows(Path(path)):
        try:
            if not isinstance(row, dict) or "type" not in row:
                raise ValueError("expected an object with a 'type' of 'item' or 'edge'")
            if row["type"] == "item":
                item = MemoryItem.from_dict(row["item"])
                if not isinstance(item.id, str) or not item.id:
                    raise InvalidTypeError(f"memory ids must be non-empty strings, got {item.id!r}")
                check_item(item, cube.text_mem.max_message_chars)  # a message kept whole, as add stores it
                items.append(item)
            elif row["type"] == "edge":
                if not isinstance(row["edge"], dict):
                    raise ValueError("an edge row needs an 'edge' object")
                edge = Edge(**row["edge"])
                validate_edge(edge)
                edges.append(edge)
            else:
                raise ValueError(f"unknown row type {row['type']!r}")
        except MemosError as exc:
            raise type(exc)(f"{path}:{n}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path}:{n} is not an export row: {exc}") from None
    latest: dict[str, MemoryItem] = {}
    for it in items:
        if it.id not in latest or latest[it.id].version < it.version:
            latest[it.id] = it
    clash = _import_clashes(cube, items, list(latest))
    if clash:
        raise InvalidInputError(
            f"{len(clash)} memories in {path} already exist in this cube with another history (e.g. {clash[:3]}); "
            "import into a new cube, or open the export as a cube and use merge() to add them as new versions"
        )
    live = [it for it in latest.values() if it.state != Lifecycle.DELETED]
    vectors = item_vectors(cube.embedder, live)  # the same views the cube embeds on add (textual.embed)
    if live:
        cube.text_mem._check_dim(vectors)  # NaN or infinite vectors are refused before any write
    vec_of = {it.id: v for it, v in zip(live, vectors)}
    # one transaction: all versions in order, then the current rows with their vectors
    with cube.store.transaction():
        for it in sorted(items, key=lambda i: (i.id, i.version)):
            cube.store.write_items([it], None)
        for it in latest.values():
            cube.store.write_items([it], vec_of[it.id][None, :] if it.id in vec_of else None)
        if edges:
            cube.store.add_edges(edges)
    cube.text_mem.sync_index()
    return len(latest)


def _import_clashes(cube: MemCube, items: Sequence[MemoryItem], ids: Sequence[str]) -> list[str]:
    """Ids the cube already holds with a history other than the file's (re-importing the same export is fine)."""
    present = cube.store.get_items(list(ids), include_deleted=True)
    if not present:
        return []
    wanted: dict[str, list[dict[str, Any]]] = {}
    for it in sorted(items, key=lambda i: i.version):
        if it.id in present:
            wanted.setdefault(it.id, []).append(it.to_dict())
    return [i for i in present if [v.to_dict() for v in cube.store.history(i)] != wanted[i]]


def _links(folder: str, names: list[str]) -> list[str]:
    """``copytree`` ignore hook: symbolic links are not copied (their targets are outside the cube)."""
    return [n for n in names if os.path.islink(os.path.join(folder, n))]


def _fsync_tree(root: Path) -> None:
    """Flush a freshly written folder to disk before it is renamed into place."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_line(row: dict[str, Any]) -> str:
    """One export line: UTF-8 as written; a string UTF-8 cannot encode is kept as a JSON escape."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate stored before validation: escaped, never lost
        line = json.dumps(row)
    return line + "\n"


def _export_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for each non-blank line of an export file."""
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield n, json.loads(line)
                except (ValueError, RecursionError) as exc:
                    raise InvalidInputError(f"{path}:{n} is not a JSON line: {str(exc)[:200]}") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not UTF-8 text; an export is JSON lines from export_jsonl") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory; give the export file") from None
