"""Building and checking :class:`~memos_integrations.items.MemoryItem` values before a write.

Split out of :mod:`.memory` (which re-exports these names): :func:`new_item` (an item from keyword
fields), :func:`check_item` (types refused before any write), :func:`ids_of` (memory ids are strings)
and ``_normalised_changes`` (an update's changes parsed and checked before anything is read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ..errors import InvalidInputError, InvalidTypeError
from ..items import Kind, Lifecycle, MemoryItem, new_id, validate_item
from .read import check_text, parse_timestamp


def _normalised_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """An update's changes with times parsed and enums checked (before anything is read or written)."""
    forbidden = {"id", "version", "created_at", "cube_id"} & set(changes)
    if forbidden:
        raise InvalidInputError(f"cannot change {sorted(forbidden)} of a memory; add a new memory instead")
    for key in ("event_time", "valid_from", "valid_to"):
        if key in changes:
            changes[key] = parse_timestamp(changes[key])
    try:
        if "state" in changes:
            changes["state"] = Lifecycle(changes["state"])
        if "kind" in changes:
            changes["kind"] = Kind(changes["kind"])
    except ValueError as exc:
        raise InvalidInputError(
            f"{exc}; kinds: {[k.value for k in Kind]}, states: {[s.value for s in Lifecycle]}"
        ) from None
    return changes


def new_item(text: str, **fields: Any) -> MemoryItem:
    """A ``MemoryItem`` from keyword fields, with times parsed and unknown fields named in the error."""
    for key in ("event_time", "valid_from", "valid_to"):
        if key in fields:
            fields[key] = parse_timestamp(fields[key])
    if "kind" in fields:
        try:
            fields["kind"] = Kind(fields["kind"])
        except ValueError:
            raise InvalidInputError(f"unknown kind {fields['kind']!r}; use one of {[k.value for k in Kind]}") from None
    fields.setdefault("id", new_id())
    try:
        return MemoryItem(text=text, **fields)
    except TypeError as exc:
        raise InvalidInputError(f"{exc}; see MemoryItem for the fields a memory has") from None


_OPTIONAL_STR = ("user_id", "agent_id", "session_id", "cube_id", "parent_id", "created_by", "method")


def check_item(item: MemoryItem, max_chars: int) -> None:
    """Reject an item whose fields would be stored as something else than they say (before any write)."""
    check_text(item.text, max_chars)
    for name in _OPTIONAL_STR:
        value = getattr(item, name)
        if value is not None and not isinstance(value, str):
            raise InvalidTypeError(f"{name} must be a string or None, got {type(value).__name__}")
    if not isinstance(item.context, str):
        raise InvalidTypeError(f"context must be a string, got {type(item.context).__name__}")
    for name in ("tags", "sources"):
        value = getattr(item, name)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise InvalidTypeError(f"{name} must be a list of strings, got {value!r}")
    if not isinstance(item.metadata, Mapping):
        raise InvalidTypeError(f"metadata must be a dict, got {type(item.metadata).__name__}")
    if item.confidence is not None and (isinstance(item.confidence, bool) or not isinstance(item.confidence, (int, float))):
        raise InvalidTypeError(f"confidence must be a number or None, got {item.confidence!r}")
    for name in ("created_at", "updated_at", "event_time", "valid_from", "valid_to"):
        value = getattr(item, name)
        if value is not None and not isinstance(value, datetime):
            raise InvalidTypeError(f"{name} must be a datetime or None, got {type(value).__name__}")
    try:
        Kind(item.kind)
        Lifecycle(item.state)
    except ValueError as exc:
        raise InvalidInputError(f"{exc}; kinds: {[k.value for k in Kind]}, states: {[s.value for s in Lifecycle]}") from None
    validate_item(item)  # values every read path can represent (times, UTF-8, JSON, numbers)


def ids_of(values: Iterable[Any]) -> list[str]:
    out = []
    for v in values:
        if not isinstance(v, str):
            raise InvalidTypeError(f"memory ids are strings, got {type(v).__name__}")
        out.append(v)
    return out
