"""The plain data every part of the engine passes around.

A :class:`MemoryItem` is the unit of plaintext memory: text plus scope (who and where), time
(when written, when it happened, when it is valid), lifecycle, version and provenance. Search returns
:class:`SearchHit` objects, one type whatever the backend. Everything here is plain data: no I/O.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Any


class Kind(str, Enum):
    """What a memory item is."""

    MESSAGE = "message"
    FACT = "fact"
    PREFERENCE = "preference"
    EVENT = "event"
    SUMMARY = "summary"
    DOCUMENT = "document"
    CHUNK = "chunk"


class Lifecycle(str, Enum):
    """Where an item is in its life: generated -> activated -> merged -> archived -> frozen.

    ``DELETED`` is a tombstone: the row and its versions stay, search no longer returns it.
    """

    GENERATED = "generated"
    ACTIVATED = "activated"
    MERGED = "merged"
    ARCHIVED = "archived"
    FROZEN = "frozen"
    DELETED = "deleted"


#: States that search returns by default.
LIVE_STATES: tuple[Lifecycle, ...] = (Lifecycle.GENERATED, Lifecycle.ACTIVATED, Lifecycle.FROZEN)


@dataclass(frozen=True)
class Scope:
    """Who an item belongs to and where it was said."""

    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    cube_id: str | None = None


@dataclass(frozen=True)
class Provenance:
    """Where an item came from: source ids, the principal who wrote it, the method, a confidence."""

    sources: tuple[str, ...] = ()
    created_by: str | None = None
    method: str | None = None
    confidence: float | None = None


@dataclass
class MemoryItem:
    """One unit of plaintext memory.

    Example:
        >>> item = MemoryItem(text="Caroline went to a support group.", user_id="caroline")
        >>> item.kind, item.state, item.version
        (<Kind.FACT: 'fact'>, <Lifecycle.GENERATED: 'generated'>, 1)
    """

    text: str
    id: str = field(default_factory=lambda: new_id())
    kind: Kind = Kind.FACT
    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    cube_id: str | None = None
    created_at: datetime = field(default_factory=lambda: utcnow())
    updated_at: datetime = field(default_factory=lambda: utcnow())
    event_time: datetime | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    state: Lifecycle = Lifecycle.GENERATED
    version: int = 1
    sources: list[str] = field(default_factory=list)
    created_by: str | None = None
    method: str | None = None
    confidence: float | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None
    #: Text around the item that the keyword index sees but that is never shown, e.g. the turn a
    #: message answers. Measured on LoCoMo: it lifts BM25 recall; embedded together with the turn it
    #: hurts the dense leg (the vector drifts toward the neighbour), so a message's vector takes the
    #: previous turn's own views at a small weight instead (``textual.embed.embed_views``, version 3).
    context: str = ""

    @property
    def scope(self) -> Scope:
        return Scope(self.user_id, self.agent_id, self.session_id, self.cube_id)

    @property
    def provenance(self) -> Provenance:
        return Provenance(tuple(self.sources), self.created_by, self.method, self.confidence)

    @property
    def index_text(self) -> str:
        """The text the keyword index sees: context, then the text."""
        return f"{self.context}\n{self.text}" if self.context else self.text

    @property
    def embed_text(self) -> str:
        """The text the dense index embeds: a message's speaker belongs to what it means."""
        speaker = self.metadata.get("speaker") if self.kind == Kind.MESSAGE else None
        return f"{speaker}: {self.text}" if isinstance(speaker, str) and speaker else self.text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings); :meth:`from_dict` reverses it exactly."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, Enum):
                out[key] = value.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryItem:
        if not isinstance(data, dict):
            from .errors import InvalidInputError

            raise InvalidInputError(f"a memory item is a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            from .errors import InvalidInputError

            raise InvalidInputError(f"unknown memory item fields {sorted(unknown)}; known: {sorted(known)}")
        kw = dict(data)
        for key in ("created_at", "updated_at", "event_time", "valid_from", "valid_to"):
            if isinstance(kw.get(key), str):
                kw[key] = datetime.fromisoformat(kw[key])
        if "kind" in kw:
            kw["kind"] = Kind(kw["kind"])
        if "state" in kw:
            kw["state"] = Lifecycle(kw["state"])
        return cls(**kw)

    def evolve(self, **changes: Any) -> MemoryItem:
        """A copy with ``changes`` applied (the dataclass stays the single source of field names)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class Edge:
    """A typed, directed relation between two items (or an item and its parent)."""

    src: str
    dst: str
    type: str
    weight: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchHit:
    """One search result: the item, its fused score, and how each retrieval leg ranked it."""

    item: MemoryItem
    score: float
    #: rank (1-based) of the item in each leg that found it, e.g. ``{"dense": 3, "keyword": 1}``
    ranks: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"SearchHit(score={self.score:.4f}, id={self.item.id!r}, text={self.item.text[:60]!r})"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # naive datetimes are taken as UTC, never as local time
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def from_epoch(value: float | None) -> datetime | None:
    """The stored epoch as a UTC datetime; one beyond ``datetime``'s range (written before times were
    validated) is clamped to MIN_TIME / MAX_TIME with a warning, so such a cube still reads and exports."""
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        import logging

        clamped = MAX_TIME if value > 0 else MIN_TIME
        logging.getLogger(__name__).warning("stored time %r is outside datetime's range; read as %s", value, clamped)
        return clamped


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_id() -> str:
    """A 26-character ULID-style id: sortable by creation time, unique within and across processes."""
    global _last_ms, _counter
    with _id_lock:
        ms = int(time.time() * 1000)
        if ms == _last_ms:
            _counter += 1
        else:
            _last_ms, _counter = ms, 0
        # 48 bits of time, 16 bits of counter, 64 random bits: monotonic within a process
        value = (ms << 80) | ((_counter & 0xFFFF) << 64) | int.from_bytes(os.urandom(8), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


# -- validation at the edge ------------------------------------------------------------------------
# Every entry point (add, add_items, update, import, the CLI, the faces) funnels into these checks
# before anything is written, so a value that some later read path cannot represent (a year-10000
# time once a timezone is applied, a lone surrogate that UTF-8 cannot encode, an integer SQLite
# cannot bind) is refused with an InvalidInputError instead of poisoning the cube.

#: Earliest and latest time a cube stores: one day inside what ``datetime`` represents, so that
#: epoch round trips, timezone shifts and the "whole day" upper bound of a search never overflow.
MIN_TIME = datetime(1, 1, 2, tzinfo=timezone.utc)
MAX_TIME = datetime(9999, 12, 30, tzinfo=timezone.utc)
#: SQLite stores integers in 64 bits.
MAX_SQL_INT = 2**63 - 1
#: Limits on shapes that would otherwise reach SQLite as huge expressions or recurse without end.
MAX_TOP_K = 1_000_000  # above any result page; internal callers grow pools (LangGraph store: 4x per round)
MAX_TAGS = 1_000
MAX_METADATA_DEPTH = 32


def _invalid(message: str) -> Exception:
    from .errors import InvalidInputError

    return InvalidInputError(message)


def check_time(value: datetime, what: str = "time") -> datetime:
    """``value`` as an aware UTC-comparable datetime, refused outside [MIN_TIME, MAX_TIME]."""
    if value.tzinfo is None:  # naive datetimes are taken as UTC, never as local time
        value = value.replace(tzinfo=timezone.utc)
    try:
        inside = MIN_TIME <= value <= MAX_TIME
    except OverflowError:  # comparing needs the UTC offset applied, which can leave datetime's range
        inside = False
    if not inside:
        raise _invalid(
            f"{what} {value.isoformat()} is outside the times a cube stores ({MIN_TIME.date()} to "
            f"{MAX_TIME.date()} UTC); leave it unset or give a time in that range")
    return value


def check_utf8(value: str, what: str = "text") -> str:
    """Refuse strings UTF-8 cannot encode (lone surrogates): SQLite, JSON exports and Chroma all need it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _invalid(
            f"{what} holds a character UTF-8 cannot encode ({exc.reason} at position {exc.start}: a lone "
            "surrogate, e.g. from a mis-decoded file); decode the source with errors='replace'") from None
    return value


def check_int(value: Any, what: str, low: int = 0, high: int = MAX_SQL_INT) -> int:
    """An ``int`` (not a bool) within [low, high], else an InvalidInputError naming the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"{what} must be an integer from {low} to {high}, got {_short(value)}")
    return value


def check_number(value: Any, what: str) -> float:
    """A finite real number (ints within SQLite's range), returned as float."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        from .errors import InvalidTypeError

        raise InvalidTypeError(f"{what} must be a number, got {_short(value)}")
    if isinstance(value, int) and abs(value) > MAX_SQL_INT:
        raise _invalid(f"{what} must be a finite number within +-2**63, got {_short(value)}")
    if not math.isfinite(value):
        raise _invalid(f"{what} must be a finite number, got {value!r}")
    return float(value)


def check_json(value: Any, what: str = "metadata", depth: int = 0) -> None:
    """JSON data a cube can store and export: str keys, UTF-8 strings, finite numbers, bounded depth."""
    import math

    if depth > MAX_METADATA_DEPTH:
        raise _invalid(f"{what} is nested more than {MAX_METADATA_DEPTH} levels deep; flatten it")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        check_utf8(value, what)
    elif isinstance(value, int):
        if abs(value) > MAX_SQL_INT:
            raise _invalid(f"{what} holds the integer {_short(value)}, beyond +-2**63; store it as a string")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _invalid(f"{what} holds {value!r}, which JSON cannot store; use null or a string")
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_json(v, what, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _invalid(f"{what} keys must be strings (JSON), got {_short(k)}")
            check_utf8(k, f"a key of {what}")
            check_json(v, f"{what}[{k[:40]!r}]" if depth == 0 else what, depth + 1)
    else:
        raise _invalid(f"{what} must be JSON data (dict, list, str, number, bool, null), got {type(value).__name__}")


def validate_item(item: MemoryItem) -> None:
    """The value checks every stored item passes (types are checked by ``textual.memory.check_item``)."""
    check_utf8(item.text, "text")
    check_utf8(item.context, "context")
    check_utf8(item.id, "id")
    for name in ("user_id", "agent_id", "session_id", "cube_id", "parent_id", "created_by", "method"):
        value = getattr(item, name)
        if isinstance(value, str):
            check_utf8(value, name)
    if len(item.tags) > MAX_TAGS:
        raise _invalid(f"a memory has at most {MAX_TAGS} tags, got {len(item.tags)}; put the rest in metadata")
    for name in ("tags", "sources"):
        for value in getattr(item, name):
            check_utf8(value, name)
    check_json(dict(item.metadata))
    if item.confidence is not None:
        check_number(item.confidence, "confidence")
    check_int(item.version, "version", 1)
    for name in ("created_at", "updated_at", "event_time", "valid_from", "valid_to"):
        value = getattr(item, name)
        if value is not None:
            check_time(value, name)
        elif name in ("created_at", "updated_at"):
            raise _invalid(f"{name} is required (an ISO 8601 time)")


def validate_edge(edge: Edge) -> None:
    """The value checks every stored relation passes."""
    for name in ("src", "dst", "type"):
        value = getattr(edge, name)
        if not isinstance(value, str) or not value.strip():
            raise _invalid(f"a relation's {name} must be a non-empty string, got {_short(value)}")
        check_utf8(value, f"relation {name}")
    check_number(edge.weight, "a relation's weight")
    if not isinstance(edge.metadata, dict):
        raise _invalid(f"a relation's metadata must be a dict, got {type(edge.metadata).__name__}")
    check_json(edge.metadata, "relation metadata")


def _short(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else text[:40] + f"... ({len(text)} characters)"
