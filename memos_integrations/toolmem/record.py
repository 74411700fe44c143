"""What one tool call leaves behind: its arguments made safe to keep, its outcome, and the plain record.

Pure functions, no I/O. A tool's arguments are whatever the model produced: possibly huge, nested
without end, of types JSON cannot hold, or carrying credentials. :func:`safe_args` turns them into a
small JSON object that can be stored and compared: keys that look like secrets are redacted (the value
never reaches the disk), strings and lists are capped, depth is bounded, and the whole is capped again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

_WORDS = (r"pass(?:word|wd|phrase)?|pwd|secret|token|api[\W_]?key|auth|credential|private[\W_]?key|access[\W_]?key"
          r"|cookie|bearer|signature")
#: argument names whose values are never stored (matched anywhere in the name, case-insensitive, after
#: Unicode compatibility folding and with invisible characters removed: "ＡＰＩ Key" is "api key")
SECRET_KEYS = re.compile(_WORDS, re.IGNORECASE)
#: a secret written inside a value: ``api_key=...`` in a URL, ``--password=...`` in a command line,
#: ``password='...'`` in a repr, ``Authorization: Bearer ...`` in a header string
_SECRET_IN_TEXT = re.compile(
    rf"""(\b[\w.-]*(?:{_WORDS.replace("|auth|", "|authorization|")})(?:[_-][\w-]*)?["']?\s*[=:]\s*["']?)([^\s&"',;)}}]+)""",
    re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer|basic)(\s+)([^\s\"',;]+)", re.IGNORECASE)
REDACTED = "[redacted]"
_STR = 300        # characters kept of one string value
_ITEMS = 20       # entries kept of one list or object
_DEPTH = 5        # nesting kept
_ERROR_CLASS = re.compile(r"\b([A-Z][A-Za-z0-9_]*(?:Error|Exception|Invalid|Failure|Timeout))\b")


def _folded(key: str) -> str:
    """``key`` as the secret-name check reads it: NFKC-folded, invisible (format) characters removed."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", key) if unicodedata.category(ch) != "Cf")


def _scrub(text: str) -> str:
    """``text`` with secrets written inside it (``key=value``, ``Bearer x``) replaced by ``[redacted]``."""
    folded = _folded(text)
    if not SECRET_KEYS.search(folded):
        return text
    folded = _BEARER.sub(rf"\1\2{REDACTED}", folded)
    return _SECRET_IN_TEXT.sub(rf"\1{REDACTED}", folded)


def _clean(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        head = _scrub(value[: 2 * _STR])  # scrubbed before the cut, so a cut cannot split a secret from its name
        if len(value) <= 2 * _STR and len(head) <= _STR:
            return head
        return head[:_STR] + f"...[{max(0, len(value) - _STR)} more chars]"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{type(value).__name__} of {len(value)} bytes>"
    if depth >= _DEPTH:
        return "<nested too deep>"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # its fields, not its repr (names get checked)
        value = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    elif isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for n, (k, v) in enumerate(value.items()):
            if n >= _ITEMS:
                out["..."] = f"{len(value) - _ITEMS} more keys"
                break
            key = _clean(k if isinstance(k, str) else repr(k), _DEPTH)
            out[key] = REDACTED if SECRET_KEYS.search(_folded(key)) else _clean(v, depth + 1)
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


def scrubbed(text: str | None, limit: int) -> str | None:
    """:func:`cap`, then secrets written inside the text redacted (an error's URL with ``api_key=``,
    an output echoing ``Authorization: Bearer ...``): errors and outputs are stored and distilled too."""
    kept = cap(text if text is None or isinstance(text, str) else str(text), limit)
    return None if kept is None else _scrub(kept)


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
