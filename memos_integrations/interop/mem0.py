"""mem0 exports: read and write the shape mem0's ``get_all`` returns, with ``history`` rows where present.

The file (JSON)::

    {"results": [{"id": "...", "memory": "Likes genmaicha", "hash": "<md5 of memory>", "metadata": {...},
                  "user_id": "alice", "agent_id": null, "run_id": "s1", "app_id": null, "categories": [...],
                  "created_at": "2024-07-20T01:30:00-07:00", "updated_at": "..."}, ...],
     "history": [{"id": "...", "memory_id": "...", "old_memory": null, "new_memory": "Likes genmaicha",
                  "event": "ADD" | "UPDATE" | "DELETE", "created_at": "...", "updated_at": "...",
                  "is_deleted": 0, "actor_id": null, "role": null}, ...]}

A bare list of memories, ``{"memories": [...]}``, and ``history`` as ``{memory_id: [rows]}`` are read too.

Mapping: ``memory`` -> text, ``user_id`` / ``agent_id`` -> the same, ``run_id`` -> ``session_id``, times kept,
``metadata`` kept; mem0's other fields (``app_id``, ``categories``, ...) are kept under ``metadata["mem0"]``
and written back on export (``hash``, the md5 of the text, is recomputed). History rows become the memory's versions (ADD and
UPDATE a new text, DELETE a tombstone), so :meth:`MemCube.history` shows how it changed. Exports put this
package's own fields that mem0 has no place for (kind, tags, event time) under ``metadata["memcube"]``.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, InvalidTypeError
from ..items import LIVE_STATES, Kind, Lifecycle, MemoryItem, utcnow
from ._files import MAX_BYTES, Fields, cube_rows, iso, load_rows, read_json, write_json

log = logging.getLogger(__name__)

#: fields of a mem0 memory mapped onto MemoryItem fields; the rest is kept in metadata["mem0"]
_MAPPED = {"id", "memory", "user_id", "agent_id", "run_id", "metadata", "created_at", "updated_at"}
_EVENTS = {"ADD", "UPDATE", "DELETE"}


def import_mem0(cube: Any, src: str | Path, *, max_bytes: int = MAX_BYTES) -> int:
    """Import a mem0 export file into ``cube``; returns how many memories (deleted ones included).

    Args:
        cube: a MemCube (or a MOS cube view with write access).
        src: the JSON file.
        max_bytes: the largest file read.

    Returns:
        The number of memories written, each with its versions.

    Raises:
        InvalidInputError: not a mem0 export (the message names the record and field), a memory id given
            twice, or ids already in the cube with another history. Nothing is written then.
    """
    data = read_json(Path(src), "mem0 export (the JSON of Memory.get_all, with history rows)", max_bytes)
    memories, history = _split(data)
    current: dict[str, Fields] = {}
    for n, record in enumerate(memories):
        f = Fields(record, f"results[{n}]")
        memory_id = f.ident("id", required=True)
        assert memory_id is not None
        if memory_id in current:
            raise InvalidInputError(f"results[{n}].id {memory_id!r} appears twice; a mem0 export lists each memory once")
        f.text("memory", required=True)
        current[memory_id] = f
    rows: dict[str, list[tuple[int, Fields]]] = {}
    for n, (where, record) in enumerate(history):
        f = Fields(record, where)
        memory_id = f.ident("memory_id", required=True)
        assert memory_id is not None
        rows.setdefault(memory_id, []).append((n, f))
    items: list[dict[str, Any]] = []
    for memory_id in list(current) + [m for m in rows if m not in current]:
        items.extend(v.to_dict() for v in _versions(memory_id, current.get(memory_id), rows.get(memory_id, [])))
    return load_rows(cube, items)


def _split(data: Any) -> tuple[list[Any], list[tuple[str, Any]]]:
    if isinstance(data, list):
        return data, []
    if not isinstance(data, dict):
        raise InvalidTypeError(f"a mem0 export is a JSON object with 'results' (or a list of memories), got {type(data).__name__}")
    memories = data.get("results", data.get("memories", []))
    if not isinstance(memories, list):
        raise InvalidTypeError("'results' of a mem0 export must be a list of memories")
    if data.get("relations"):  # mem0's graph memory: entity triples, not memories; said, not silently dropped
        log.warning("the mem0 export's %d 'relations' (graph memory) are not imported; only memories and history are",
                    len(data["relations"]) if isinstance(data["relations"], list) else 1)
    raw = data.get("history") or []
    history: list[tuple[str, Any]] = []
    if isinstance(raw, dict):
        for memory_id, group in raw.items():
            if not isinstance(group, list):
                raise InvalidTypeError(f"history[{memory_id!r}] must be a list of history rows")
            for n, row in enumerate(group):
                if isinstance(row, dict):
                    row = {"memory_id": memory_id, **row}
                history.append((f"history[{memory_id!r}][{n}]", row))
    elif isinstance(raw, list):
        history = [(f"history[{n}]", row) for n, row in enumerate(raw)]
    else:
        raise InvalidTypeError("'history' of a mem0 export must be a list of rows (or {memory_id: [rows]})")
    return memories, history


def _versions(memory_id: str, mem: Fields | None, rows: list[tuple[int, Fields]]) -> list[MemoryItem]:
    """The versions of one memory: one per ADD / UPDATE / DELETE row, then the current text if it differs."""
    steps: list[tuple[str, Lifecycle, datetime | None]] = []
    ordered = sorted(rows, key=lambda pair: (_sort_time(pair[1]), pair[0]))
    for _, row in ordered:
        event = row.text("event", required=True)
        assert event is not None
        if event.upper() not in _EVENTS:
            raise InvalidInputError(f"{row.where}.event {event!r} is not one of {sorted(_EVENTS)}")
        at = row.time("created_at") or row.time("updated_at")
        if event.upper() == "DELETE":
            text = row.text("old_memory") or (steps[-1][0] if steps else (mem.text("memory") if mem else None))
            if not text:
                raise InvalidInputError(f"{row.where} deletes a memory whose text the file never gives")
            steps.append((text, Lifecycle.DELETED, at))
        else:
            new = row.text("new_memory", required=True)
            assert new is not None
            steps.append((new, Lifecycle.GENERATED, at))
    base: dict[str, Any] = {}
    if mem is not None:
        text = mem.text("memory", required=True)
        assert text is not None
        if not steps or steps[-1][0] != text or steps[-1][1] == Lifecycle.DELETED:
            steps.append((text, Lifecycle.GENERATED, mem.time("updated_at") or mem.time("created_at")))
        base = _fields_of(mem)
    elif ordered:  # a memory known only from its history (deleted since): who acted is all the rows tell
        base = {"created_by": ordered[0][1].ident("actor_id")}
    created = base.pop("created_at", None) or next((at for _, _, at in steps if at), None) or utcnow()
    out = []
    for version, (text, state, at) in enumerate(steps, start=1):
        out.append(MemoryItem(text=text, id=memory_id, state=state, version=version, created_at=created,
                              updated_at=at or created, method="import:mem0", **base))
    return out


def _fields_of(mem: Fields) -> dict[str, Any]:
    """MemoryItem fields from a mem0 memory: ids, times, metadata (mem0's own extras under metadata['mem0'])."""
    metadata = mem.mapping("metadata")
    ours = metadata.pop("memcube", None)
    # the hash is mem0's md5 of the text: derived, recomputed on export, not kept
    extras = {k: v for k, v in mem.record.items() if k not in _MAPPED and k != "hash" and v is not None}
    if extras:
        metadata["mem0"] = extras
    out: dict[str, Any] = {
        "user_id": mem.ident("user_id"), "agent_id": mem.ident("agent_id"), "session_id": mem.ident("run_id"),
        "metadata": metadata, "created_by": mem.ident("user_id"),
    }
    created = mem.time("created_at")
    if created is not None:
        out["created_at"] = created
    if isinstance(ours, dict):  # written by export_mem0: this package's fields mem0 has no place for
        theirs = Fields(ours, f"{mem.where}.metadata.memcube")
        kind = theirs.text("kind")
        if kind is not None:
            try:
                out["kind"] = Kind(kind)
            except ValueError:
                raise InvalidInputError(f"{theirs.where}.kind {kind!r} is not one of {[k.value for k in Kind]}") from None
        out["tags"] = theirs.strings("tags")
        out["event_time"] = theirs.time("event_time")
    return out


def _sort_time(row: Fields) -> float:
    """The row's time as epoch seconds (rows without one first): ISO strings with different UTC offsets
    do not sort as the times they name."""
    at = row.time("created_at") or row.time("updated_at")
    return at.timestamp() if at else float("-inf")


def export_mem0(cube: Any, dst: str | Path) -> int:
    """Write ``cube`` as a mem0 export (``results`` and ``history``) to ``dst``; returns how many live memories.

    Deleted (and archived) memories are not in ``results``; their history rows are (a deleted one's ending in
    a DELETE).
    """
    current, versions, _ = cube_rows(cube)
    results = [_memory(item) for item in current if item.state in LIVE_STATES]  # what get_all would list
    history: list[dict[str, Any]] = []
    for memory_id, chain in versions.items():
        previous: str | None = None
        for v in chain:
            deleted = v.state == Lifecycle.DELETED
            event = "DELETE" if deleted else ("ADD" if previous is None else "UPDATE")
            history.append({
                "id": f"{memory_id}:{v.version}", "memory_id": memory_id, "old_memory": previous,
                "new_memory": None if deleted else v.text, "event": event, "created_at": iso(v.updated_at),
                "updated_at": iso(v.updated_at), "is_deleted": int(deleted), "actor_id": v.created_by, "role": None,
            })
            previous = v.text
    write_json(Path(dst), {"results": results, "history": history})
    return len(results)


def _memory(item: MemoryItem) -> dict[str, Any]:
    metadata = dict(item.metadata)
    extras = metadata.pop("mem0", None)
    ours = {k: v for k, v in (("kind", item.kind.value if item.kind != Kind.FACT else None),
                              ("tags", list(item.tags) or None), ("event_time", iso(item.event_time))) if v}
    if ours:
        metadata["memcube"] = ours
    out: dict[str, Any] = {
        "id": item.id, "memory": item.text, "hash": hashlib.md5(item.text.encode("utf-8")).hexdigest(),
        "metadata": metadata or None, "user_id": item.user_id, "agent_id": item.agent_id, "run_id": item.session_id,
        "created_at": iso(item.created_at), "updated_at": iso(item.updated_at),
    }
    if isinstance(extras, dict):
        out.update({k: v for k, v in extras.items() if k not in _MAPPED and k != "hash"})
    return out

