"""What one tool call leaves behind: its arguments made safe to keep, its outcome, and the plain record.

Pure functions, no I/O. A tool's arguments are whatever the model produced: possibly huge, nested
without end, of types JSON cannot hold, or carrying credentials. :func:`safe_args` turns them into a
small JSON object that can be stored and compared: keys that look like secrets are redacted (the value
never reaches the disk), strings and lists are capped, depth is bounded, and the whole is capped again.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: argument names whose values are never stored (matched anywhere in the name, case-insensitive)
SECRET_KEYS = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|auth|credential|private[_-]?key|cookie|bearer|signature",
    re.IGNORECASE)
REDACTED = "[redacted]"
_STR = 300        # characters kept of one string value
_ITEMS = 20       # entries kept of one list or object
_DEPTH = 5        # nesting kept
_ERROR_CLASS = re.compile(r"\b([A-Z][A-Za-z0-9_]*(?:Error|Exception|Invalid|Failure|Timeout))\b")


def _clean(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if len(value) <= _STR else value[:_STR] + f"...[{len(value) - _STR} more chars]"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{type(value).__name__} of {len(value)} bytes>"
    if depth >= _DEPTH:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for n, (k, v) in enumerate(value.items()):
            if n >= _ITEMS:
                out["..."] = f"{len(value) - _ITEMS} more keys"
                break
            key = _clean(k if isinstance(k, str) else repr(k), _DEPTH)
            out[key] = REDACTED if SECRET_KEYS.search(key) else _clean(v, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        kept = [_clean(v, depth + 1) for v in items[:_ITEMS]]
        return kept + [f"... {len(items) - _ITEMS} more"] if len(items) > _ITEMS else kept
    text = repr(value) if type(value).__repr__ is not object.__repr__ else f"<{type(value).__name__}>"
    return _clean(text, depth)


def safe_args(args: Any, max_chars: int = 2000) -> dict[str, Any]:
    """``args`` as a JSON-safe object of at most ``max_chars`` characters of JSON, secrets redacted.

    >>> safe_args({"city": "Paris", "api_key": "sk-123", "blob": b"\\x00" * 9})
    {'city': 'Paris', 'api_key': '[redacted]', 'blob': '<bytes of 9 bytes>'}
    >>> len(json.dumps(safe_args({"q": "x" * 10_000}, max_chars=100))) <= 100
    True
    """
    cleaned = _clean(args if isinstance(args, Mapping) else {"input": args}, 0)
    text = json.dumps(cleaned, ensure_ascii=False, allow_nan=False)
    if len(text) <= max_chars:
        return cleaned  # type: ignore[no-any-return]  # a Mapping cleans to a dict
    # too big as a whole: keep each top-level value short, then the whole as a preview if still too big
    share = max(16, max_chars // max(1, len(cleaned)) - 16)
    short = {k: (v if len(json.dumps(v, ensure_ascii=False)) <= share else
                 json.dumps(v, ensure_ascii=False)[:share] + "...") for k, v in cleaned.items()}
    if len(json.dumps(short, ensure_ascii=False)) <= max_chars:
        return short
    return {"...": json.dumps(short, ensure_ascii=False)[: max(0, max_chars - 20)]}


def cap(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters (None stays None, 0 keeps nothing)."""
    if text is None or limit <= 0:
        return None
    return text if len(text) <= limit else text[:limit] + "..."


def error_class_of(text: str) -> str:
    """The exception class a framework's error text names (``"Error: ValueError('...')"`` -> ``ValueError``)."""
    found = _ERROR_CLASS.search(text or "")
    return found.group(1) if found else "ToolError"


@dataclass(frozen=True)
class ToolCall:
    """One recorded call: who made it, which tool with what (safe) arguments, and how it went."""

    id: str
    user_id: str
    tool: str
    args: dict[str, Any]
    ok: bool
    latency_ms: float
    created_at: float
    agent_id: str | None = None
    session_id: str | None = None
    call_id: str | None = None
    error_class: str | None = None
    error: str | None = None
    output: str | None = None

    def row(self) -> tuple[Any, ...]:
        """The row for ``storage.tables.toolcalls`` (its ``COLUMNS`` order)."""
        return (self.id, self.user_id, self.agent_id, self.session_id, self.tool, self.call_id,
                json.dumps(self.args, ensure_ascii=False, sort_keys=True), int(self.ok), self.error_class,
                self.error, self.output, float(self.latency_ms), float(self.created_at))

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> ToolCall:
        (id_, user, agent, session, tool, call_id, args, ok, error_class, error, output, latency, created) = row
        return cls(id=id_, user_id=user, agent_id=agent, session_id=session, tool=tool, call_id=call_id,
                   args=json.loads(args), ok=bool(ok), error_class=error_class, error=error, output=output,
                   latency_ms=float(latency), created_at=float(created))
