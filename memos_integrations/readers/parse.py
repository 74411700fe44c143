"""Tolerant JSON reading of a model's reply: code fences, prose around the object, trailing commas."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


class ReplyNotJSON(ValueError):
    """The reply holds no JSON object of the expected shape (the reader asks once more, then gives up)."""


def parse_object(text: str, key: str, kind: type = list) -> dict[str, Any]:
    """The first JSON object in ``text`` whose ``key`` holds a ``kind`` (a bare list is taken as that key's
    value when ``kind`` is list)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for raw in candidates:
        for chunk in _objects(raw):
            for attempt in (chunk, _TRAILING_COMMA.sub(r"\1", chunk)):
                try:
                    value = json.loads(attempt)
                except ValueError:
                    continue
                if isinstance(value, dict) and isinstance(value.get(key), kind):
                    return value
                if isinstance(value, list) and kind is list:
                    return {key: value}
    raise ReplyNotJSON(f"no JSON object with a {key!r} {kind.__name__} in the reply ({text[:120]!r})")


def _objects(text: str) -> list[str]:
    """Balanced ``{...}`` / ``[...]`` spans of ``text``, outermost first (strings respected)."""
    out: list[str] = []
    for start, ch in enumerate(text):
        if ch not in "{[":
            continue
        depth, in_str, esc = 0, False, False
        for end in range(start, len(text)):
            c = text[end]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
                continue
            if c == '"':
                in_str = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    out.append(text[start:end + 1])
                    break
        if len(out) >= 20:
            break
    return out
