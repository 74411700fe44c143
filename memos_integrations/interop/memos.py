"""MemOS cube directories: read and write ``config.json`` + ``textual_memory.json`` (general or tree memories).

A MemOS cube directory (``GeneralMemCube.dump``) holds::

    config.json                 GeneralMemCubeConfig: text_mem / act_mem / para_mem backends and file names
    textual_memory.json         general_text: a list of {"id", "vector", "payload": {"id", "memory", "metadata"}}
                                (plain {"id", "memory", "metadata"} items are read too);
                                tree_text: {"nodes": [{"id", "memory", "metadata"}], "edges": [{"source", "target", "type"}]}
    activation_memory.pickle    KV caches, pickled
    parametric_memory.adapter   LoRA weights

Only text is imported. The pickled activation memory (and any other ``.pickle`` / ``.pkl``, and the adapter,
whose format is a torch pickle) is **never loaded**: unpickling a file runs code from whoever wrote it.
Its presence refuses the import with a message naming the file, unless ``skip_pickles=True`` (CLI
``--skip-pickles``), which imports the text and leaves those files alone.

Metadata mapping: ``user_id``, ``session_id`` kept; ``type`` (fact, event, opinion, procedure, ...) becomes the
kind where one matches (opinion -> preference) and is kept in ``metadata["memos"]``; ``memory_time`` ->
event time; ``status`` -> lifecycle (activated, archived, deleted); ``confidence``, ``tags``,
``created_at`` / ``updated_at`` kept; every other field (``entities``, ``visibility``, ``source``,
``memory_type``, ``key``, ``background``, ...) is kept under ``metadata["memos"]`` and written back on
export. Vectors are not imported (they belong to another embedder): the cube embeds the text itself.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, InvalidTypeError
from ..items import Kind, Lifecycle, MemoryItem, utcnow
from ._files import MAX_BYTES, Fields, cube_rows, iso, load_rows, read_json, write_json

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
TEXT_FILE = "textual_memory.json"
PICKLE_SUFFIXES = (".pickle", ".pkl", ".pt", ".pth", ".adapter")
_KIND = {"fact": Kind.FACT, "event": Kind.EVENT, "opinion": Kind.PREFERENCE, "preference": Kind.PREFERENCE}
_STATE = {"activated": Lifecycle.ACTIVATED, "archived": Lifecycle.ARCHIVED, "deleted": Lifecycle.DELETED,
          "generated": Lifecycle.GENERATED, "merged": Lifecycle.MERGED, "frozen": Lifecycle.FROZEN}
_TYPE_OF = {Kind.FACT: "fact", Kind.EVENT: "event", Kind.PREFERENCE: "opinion"}
_MAPPED = {"user_id", "session_id", "status", "memory_time", "confidence", "tags", "created_at", "updated_at",
           "embedding", "vector"}
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def import_memos(cube: Any, src: str | Path, *, skip_pickles: bool = False, max_bytes: int = MAX_BYTES) -> int:
    """Import the textual memory of a MemOS cube directory into ``cube``; returns how many memories.

    Args:
        cube: a MemCube (or a MOS cube view with write access).
        src: the MemOS cube directory.
        skip_pickles: import the text even though the directory holds pickled memories (never loaded).
        max_bytes: the largest file read.

    Returns:
        The number of memories written.

    Raises:
        InvalidInputError: not a MemOS cube directory, a pickled file present (without ``skip_pickles``),
            a file name that leaves the directory, or a record of the wrong shape. Nothing is written then.
    """
    root = Path(src)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a directory; give a MemOS cube directory (config.json, textual_memory.json)")
    config = _config(root, max_bytes)
    text_cfg = _section(config, "text_mem")
    filename = _plain_file(Fields(text_cfg.get("config") or {}, "config.json text_mem.config").text("memory_filename")
                           or TEXT_FILE, "text_mem.config.memory_filename")
    pickles = _pickled_files(root, config)
    if pickles and not skip_pickles:
        names = ", ".join(p.name for p in pickles)
        raise InvalidInputError(
            f"{root} holds pickled memory ({names}): activation memory and adapters in MemOS cubes are Python "
            "pickles, and loading a pickle runs whatever code its author put in it, so they are never read. "
            "Import the text alone with skip_pickles=True (memcube import --from memos --skip-pickles), or "
            "delete those files")
    for p in pickles:
        log.warning("not loaded (a pickle is never unpickled): %s", p)
    path = _inside(root, filename)
    data = read_json(path, "MemOS textual memory (textual_memory.json)", max_bytes)
    if isinstance(data, list):
        records = [(f"{filename}[{n}]", _unwrap(r, f"{filename}[{n}]")) for n, r in enumerate(data)]
        raw_edges: list[Any] = []
    elif isinstance(data, dict) and isinstance(data.get("nodes"), list):
        records = [(f"{filename}.nodes[{n}]", r) for n, r in enumerate(data["nodes"])]
        raw_edges = data.get("edges") or []
        if not isinstance(raw_edges, list):
            raise InvalidTypeError(f"{filename}.edges must be a list of {{source, target, type}}")
    else:
        raise InvalidTypeError(
            f"{filename} must be a list of memories (general_text) or {{'nodes': [...], 'edges': [...]}} (tree_text)")
    items: list[dict[str, Any]] = []
    seen: set[str] = set()
    for where, record in records:
        item = _item(Fields(record, where))
        if item.id in seen:
            raise InvalidInputError(f"{where}.id {item.id!r} appears twice; each memory is listed once")
        seen.add(item.id)
        items.append(item.to_dict())
    edges = [_edge(Fields(e, f"{filename}.edges[{n}]"), seen) for n, e in enumerate(raw_edges)]
    return load_rows(cube, items, edges)


def _config(root: Path, max_bytes: int) -> dict[str, Any]:
    path = root / CONFIG_FILE
    if not path.exists():
        if (root / TEXT_FILE).exists():
            return {}
        raise InvalidInputError(f"{root} has neither config.json nor textual_memory.json; give a MemOS cube directory")
    data = read_json(_inside(root, CONFIG_FILE), "MemOS cube config (config.json)", min(max_bytes, 16 * 1024 * 1024))
    if not isinstance(data, dict):
        raise InvalidTypeError("config.json must be a JSON object (a GeneralMemCubeConfig)")
    return data


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, dict):
        raise InvalidTypeError(f"config.json {name} must be a JSON object")
    return value


def _pickled_files(root: Path, config: dict[str, Any]) -> list[Path]:
    """Files that are (or are configured as) pickles: the activation memory, adapters, any .pickle/.pkl."""
    found = {p for p in root.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES}
    for name in ("act_mem", "para_mem"):
        section = _section(config, name)
        filename = (section.get("config") or {}).get("memory_filename") if isinstance(section.get("config"), dict) else None
        if isinstance(filename, str) and _PLAIN_NAME.match(filename) and (root / filename).exists():
            found.add(root / filename)
    return sorted(found)


def _plain_file(name: str, what: str) -> str:
    if not _PLAIN_NAME.match(name) or ".." in name:
        raise InvalidInputError(
            f"config.json {what} {name[:80]!r} is not a plain file name; a cube's files stay inside its directory")
    return name


def _inside(root: Path, name: str) -> Path:
    """``root/name``, refused if it is a link or resolves outside ``root``."""
    path = root / name
    if path.is_symlink() or not path.resolve().is_relative_to(root.resolve()):
        raise InvalidInputError(f"{path} is a link or leaves {root}; a cube's files stay inside its directory")
    return path


def _unwrap(record: Any, where: str) -> Any:
    """A general_text dump entry: a qdrant point {"id", "vector", "payload": {...}}, or the item itself."""
    if isinstance(record, dict) and "payload" in record:
        payload = record["payload"]
        if not isinstance(payload, dict):
            raise InvalidTypeError(f"{where}.payload must be a JSON object")
        return {"id": record.get("id"), **payload}
    return record


def _item(f: Fields) -> MemoryItem:
    memory_id = f.ident("id", required=True)
    text = f.text("memory", required=True)
    assert memory_id is not None and text is not None
    meta = Fields(f.mapping("metadata"), f"{f.where}.metadata")
    memos_type = meta.text("type")
    status = meta.text("status")
    if status is not None and status not in _STATE:
        raise InvalidInputError(f"{meta.where}.status {status!r} is not one of {sorted(_STATE)}")
    confidence = meta.record.get("confidence")
    if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))):
        raise InvalidTypeError(f"{meta.where}.confidence must be a number, got {type(confidence).__name__}")
    sources = meta.record.get("sources")
    extra = {k: v for k, v in meta.record.items() if k not in _MAPPED and v is not None}
    if isinstance(sources, list) and all(isinstance(s, str) for s in sources):
        extra.pop("sources", None)
    else:
        sources = []
    kind = _KIND.get(memos_type or "", Kind.FACT)
    if memos_type is not None and _TYPE_OF.get(kind) == memos_type:
        extra.pop("type", None)  # what the kind says already; kept only when it says more (procedure, topic ...)
    ours = extra.pop("memcube_metadata", None)  # written by export_memos: this package's own metadata
    metadata = dict(ours) if isinstance(ours, dict) else {}
    if extra:
        metadata["memos"] = extra
    created = meta.time("created_at") or meta.time("updated_at") or utcnow()
    event_time = meta.time("memory_time")
    return MemoryItem(
        text=text, id=memory_id, kind=kind, user_id=meta.ident("user_id"),
        session_id=meta.ident("session_id"), created_at=created, updated_at=meta.time("updated_at") or created,
        event_time=event_time, state=_STATE.get(status or "", Lifecycle.ACTIVATED), tags=meta.strings("tags"),
        sources=list(sources), confidence=float(confidence) if confidence is not None else None,
        metadata=metadata, method="import:memos", created_by=meta.ident("user_id"),
    )


def _edge(f: Fields, ids: set[str]) -> dict[str, Any]:
    src, dst = f.ident("source", required=True), f.ident("target", required=True)
    kind = f.text("type", required=True)
    for end in (src, dst):
        if end not in ids:
            raise InvalidInputError(f"{f.where} links {end!r}, which is not a memory of this file")
    return {"src": src, "dst": dst, "type": kind, "weight": 1.0, "metadata": {}}


def export_memos(cube: Any, dst: str | Path, *, tree: bool | None = None) -> int:
    """Write ``cube``'s memories (archived ones with ``status: archived``; not deleted ones) as a MemOS cube
    directory at ``dst`` (new or empty); returns how many.

    Args:
        cube: a MemCube or a MOS cube view.
        dst: the directory to create.
        tree: write ``tree_text`` (nodes and edges) or ``general_text`` (a list); None: tree if the cube has edges.

    Returns:
        How many memories were written. No pickles and no adapters are written.
    """
    out = Path(dst)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInputError(f"{out} is not empty; export into a new directory")
    live, _, edges = cube_rows(cube)
    use_tree = bool(edges) if tree is None else tree
    embedder = cube.embedder
    cube_id = str(getattr(cube, "cube_id", out.name))
    records = [{"id": it.id, "memory": it.text, "metadata": _metadata(it, use_tree)} for it in live]
    if use_tree:
        live_ids = {it.id for it in live}
        data: Any = {"nodes": records, "edges": [{"source": e["src"], "target": e["dst"], "type": e["type"]}
                                                 for e in edges if e["src"] in live_ids and e["dst"] in live_ids]}
    else:
        vectors = embedder.embed_documents([it.embed_text for it in live]) if live else []
        data = [{"id": r["id"], "vector": [float(x) for x in v], "payload": r} for r, v in zip(records, vectors)]
    config = {
        "model_schema": "memos.configs.mem_cube.GeneralMemCubeConfig", "cube_id": cube_id,
        "config_filename": CONFIG_FILE,
        "text_mem": {"backend": "tree_text" if use_tree else "general_text",
                     "config": {"cube_id": cube_id, "memory_filename": TEXT_FILE,
                                "embedder": {"backend": "sentence_transformer",
                                             "config": {"model_name_or_path": f"sentence-transformers/{embedder.name}"}},
                                "vector_db": {"backend": "qdrant", "config": {
                                    "collection_name": cube_id, "vector_dimension": int(embedder.dimension),
                                    "distance_metric": "cosine"}}}},
        "act_mem": {"backend": "uninitialized", "config": {}},
        "para_mem": {"backend": "uninitialized", "config": {}},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / TEXT_FILE, data)
    write_json(out / CONFIG_FILE, config)
    return len(live)


def _metadata(item: MemoryItem, tree: bool) -> dict[str, Any]:
    extra = dict(item.metadata.get("memos") or {}) if isinstance(item.metadata.get("memos"), dict) else {}
    others = {k: v for k, v in item.metadata.items() if k != "memos"}
    meta: dict[str, Any] = {**extra}
    if others:
        meta["memcube_metadata"] = others
    meta.setdefault("type", _TYPE_OF.get(item.kind, "fact"))
    if tree:
        meta.setdefault("memory_type", "LongTermMemory")
    state = {Lifecycle.ARCHIVED: "archived", Lifecycle.DELETED: "deleted"}.get(item.state, "activated")
    meta.update({
        "user_id": item.user_id, "session_id": item.session_id, "status": state, "tags": list(item.tags),
        "created_at": iso(item.created_at), "updated_at": iso(item.updated_at),
    })
    if item.event_time is not None:
        meta["memory_time"] = item.event_time.date().isoformat() if _midnight(item) else iso(item.event_time)
    if item.confidence is not None:
        meta["confidence"] = item.confidence
    if item.sources:
        meta["sources"] = list(item.sources)
    return meta


def _midnight(item: MemoryItem) -> bool:
    t = item.event_time
    return t is not None and (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0)
