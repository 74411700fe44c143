"""Reading untrusted files for the importers, and loading their rows through the cube's own import.

Every importer reads with :func:`read_json` (size capped before reading, UTF-8, no NaN, bounded nesting)
and checks fields with :class:`Fields` (each error names the record and field), then hands export rows to
:func:`load_rows`, which goes through :meth:`MemCube.import_jsonl`: one transaction, every row checked.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, InvalidTypeError

#: Largest file an importer reads (bytes); pass ``max_bytes=`` for a larger one.
MAX_BYTES = 256 * 1024 * 1024
#: Longest id kept from a foreign file.
MAX_ID_CHARS = 256


def read_json(path: Path, what: str, max_bytes: int = MAX_BYTES) -> Any:
    """The JSON in ``path``, refused (with a message saying what to do) if it is not a plain file of JSON."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InvalidInputError(f"{path} does not exist; give the {what}") from None
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a regular file; give the {what}")
    if st.st_size > max_bytes:
        raise InvalidInputError(
            f"{path} is {st.st_size:,} bytes, over the {max_bytes:,} an import reads; split it, or pass a larger "
            "max_bytes if you trust the file")
    with open(path, "rb") as fh:
        head = fh.read(2)
        data = head + fh.read(max_bytes + 1 - len(head))  # the size read, not the size stat() said
    if len(data) > max_bytes:
        raise InvalidInputError(f"{path} grew past {max_bytes:,} bytes while being read; import a finished file")
    if head[:1] == b"\x80":
        raise InvalidInputError(
            f"{path} is a Python pickle, not JSON; a pickle runs code when loaded, so it is never read: "
            f"export the {what} as JSON")
    try:
        return _checked_tree(json.loads(data.decode("utf-8"), parse_constant=_no_constant), path)
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not UTF-8 text; give the {what} as JSON") from None
    except RecursionError:
        raise InvalidInputError(f"{path} is nested too deeply to be a {what}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not JSON ({exc}); give the {what}") from None


#: Deepest nesting of arrays and objects an import reads (a cube keeps metadata at most 32 levels deep).
MAX_DEPTH = 64


def _checked_tree(data: Any, path: Path) -> Any:
    """``data``, refused if nested deeper than :data:`MAX_DEPTH` or holding a string that is not Unicode text.

    ``json.loads`` accepts ~1,000 levels and lone surrogates (``"\\ud800"``); the first overflowed the
    recursion of later copies (a RecursionError), the second failed as a UnicodeEncodeError when the
    rows were written out. Checked without recursion, once, before any row is built.
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInputError(
                    f"{path} holds the string {value[:40]!r}, which has a lone surrogate escape (not Unicode "
                    "text); fix or drop that field") from None
            continue
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise InvalidInputError(
                    f"{path} is nested more than {MAX_DEPTH} levels deep, which no export writes; flatten it")
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return data


def _no_constant(name: str) -> Any:
    raise InvalidInputError(f"the file holds {name}, which JSON does not allow; write null or a string")


class Fields:
    """Typed reads of one foreign record; every error names the record (``results[3].memory ...``)."""

    def __init__(self, record: Any, where: str) -> None:
        if not isinstance(record, dict):
            raise InvalidTypeError(f"{where} must be a JSON object, got {type(record).__name__}")
        self.record = record
        self.where = where

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.record.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            raise InvalidTypeError(f"{self.where}.{key} must be a{' non-empty' if required else ''} string, "
                                   f"got {_kind(value)}")
        return value

    def ident(self, key: str, *, required: bool = False) -> str | None:
        """An id (or user/agent/session id): a short printable string; a number is taken as its text."""
        value = self.record.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is None or value == "":
            if required:
                raise InvalidInputError(f"{self.where}.{key} is required")
            return None
        if not isinstance(value, str):
            raise InvalidTypeError(f"{self.where}.{key} must be a string, got {_kind(value)}")
        if len(value) > MAX_ID_CHARS or not value.isprintable() or value != value.strip():
            raise InvalidInputError(
                f"{self.where}.{key} must be at most {MAX_ID_CHARS} printable characters without surrounding spaces")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.record.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidTypeError(f"{self.where}.{key} must be a JSON object, got {_kind(value)}")
        return dict(value)

    def strings(self, key: str) -> list[str]:
        value = self.record.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidTypeError(f"{self.where}.{key} must be a list of strings, got {_kind(value)}")
        return list(value)

    def time(self, key: str) -> datetime | None:
        value = self.record.get(key)
        if value is None or value == "":
            return None
        return parse_time(value, f"{self.where}.{key}")


def parse_time(value: Any, where: str) -> datetime:
    """An ISO 8601 time (``Z`` allowed, naive taken as UTC) or epoch seconds/milliseconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 10_000_000_000 else value  # mem0 platform rows use milliseconds
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise InvalidInputError(f"{where} {value!r} is not a time a cube stores") from None
    if not isinstance(value, str):
        raise InvalidTypeError(f"{where} must be an ISO 8601 time, got {_kind(value)}")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"{where} {value[:60]!r} is not an ISO 8601 time (e.g. 2024-07-20T01:30:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def load_rows(cube: Any, items: Iterable[dict[str, Any]], edges: Iterable[dict[str, Any]] = ()) -> int:
    """Load item versions and edges (the shapes :meth:`MemCube.export_jsonl` writes) with ``cube.import_jsonl``."""
    fd, name = tempfile.mkstemp(prefix="memos-interop-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for item in items:
                fh.write(json.dumps({"type": "item", "item": item}, ensure_ascii=False) + "\n")
            for edge in edges:
                fh.write(json.dumps({"type": "edge", "edge": edge}, ensure_ascii=False) + "\n")
        return int(cube.import_jsonl(name))
    finally:
        os.unlink(name)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` beside ``path`` and rename it into place: a failed export leaves no partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cube_rows(cube: Any) -> tuple[list[Any], dict[str, list[Any]], list[dict[str, Any]]]:
    """The cube's memories that are not deleted (archived included), every memory's versions by id (oldest
    first) and its edges.

    Parts of long texts (``chunk`` items with ``metadata["part_of"]``) are left out: they are an index
    of their message, rebuilt when the message is imported.
    """
    from ..items import Kind, Lifecycle, MemoryItem

    versions: dict[str, list[MemoryItem]] = {}
    edges: list[dict[str, Any]] = []
    for row in cube.export_jsonl():
        if row.get("type") == "item":
            item = MemoryItem.from_dict(row["item"])
            if item.kind == Kind.CHUNK and "part_of" in item.metadata:
                continue
            versions.setdefault(item.id, []).append(item)
        elif row.get("type") == "edge":
            edges.append(dict(row["edge"]))
    for chain in versions.values():
        chain.sort(key=lambda it: it.version)
    live = [chain[-1] for chain in versions.values() if chain[-1].state != Lifecycle.DELETED]
    return live, versions, [e for e in edges if e["src"] in versions and e["dst"] in versions]


def check_mapping(value: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidTypeError(f"{where} must be a JSON object, got {_kind(value)}")
    return dict(value)


def _kind(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
