"""From a user's tool calls to "when X, avoid it; do Y instead" experiences: deterministic and extractive.

Pure functions, no I/O, no model. For one tool, in call order:

1. Each call's arguments get a *shape*: per argument, the value's character classes (``"#123"`` is
   ``#9``, ``"Paris"`` is ``a``; numbers ``num``, lists ``list`` ...). Failures are grouped by error class
   and shape. A shape whose calls almost all fail (>= ``SHAPE_FAILS``) is the pattern itself ("order_id
   like '#9'"); otherwise the shape cannot tell good from bad calls and failures are grouped by their
   literal arguments instead ("city='Pariss'").
2. A *fix* is the next call of the same tool in the same session after a failure, when it succeeded with
   other arguments: what changed is "do Y instead". Changes count together by shape (``order_id='123'``
   and ``order_id='456'`` are one fix, ``9``); the most frequent wins, and its latest change is the example.
3. Every number in an experience is counted from the calls (``failed``/``like`` for the pattern,
   ``fixed``/``retried`` for the fix, the tool's overall success rate), and its ``sources`` are the ids of
   the calls it was read from, so an experience can always be traced back and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .record import REDACTED, ToolCall

SHAPE_FAILS = 0.8  # a shape is a pattern when at least this share of its calls failed
MAX_SOURCES = 50   # call ids kept as provenance of one experience (the latest)


@dataclass(frozen=True)
class Experience:
    """One distilled lesson about one tool, with the counts it rests on and the calls it came from."""

    tool: str
    key: str                    # stable across re-distillation: tool, error class and pattern
    pattern: str                # what to avoid, as text ("order_id like '#9' (e.g. order_id='#123')")
    error_class: str
    last_error: str
    failed: int                 # failures that match the pattern
    like: int                   # calls that match the pattern, failed or not
    instead: dict[str, Any] | None  # the argument change that worked after such a failure
    fixed: int                  # retries with that change that succeeded
    retried: int                # retries after such a failure (any change)
    tool_calls: int             # all calls of the tool considered
    tool_ok: int                # of which succeeded
    sources: tuple[str, ...]

    @property
    def success_rate(self) -> float:
        """Share of calls matching the pattern that succeeded."""
        return (self.like - self.failed) / self.like if self.like else 0.0

    def text(self) -> str:
        """The extractive wording shown to the model (one line)."""
        line = (f"{self.tool}: avoid calling it with {self.pattern}: {self.failed} of {self.like} such calls failed "
                f"({self.error_class}: {self.last_error})")
        if self.instead:
            line += f". Instead use {render_args(self.instead)} (worked in {self.fixed} of {self.retried} retries)"
        return line + "."

    def metadata(self) -> dict[str, Any]:
        return {"tool": self.tool, "experience_key": self.key, "error_class": self.error_class,
                "failed": self.failed, "like": self.like, "fixed": self.fixed, "retried": self.retried,
                "success_rate": round(self.success_rate, 4), "instead": self.instead,
                "tool_calls": self.tool_calls, "tool_ok": self.tool_ok}


#: an optional writer (e.g. an LLM reader): the experience and the calls it rests on -> the text to store
Writer = Callable[[Experience, Sequence[ToolCall]], str]


def value_shape(value: Any) -> str:
    """A value's character-class shape (``"#123-ab"`` -> ``"#9-a"``); other types by kind."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "num"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "obj"
    out: list[str] = []
    for ch in str(value)[:64]:
        cls = "9" if ch.isdigit() else "a" if ch.isalpha() else "_" if ch.isspace() else ch
        if not out or out[-1] != cls:
            out.append(cls)
    return "".join(out)[:24] or "''"


def args_shape(args: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, value_shape(v)) for k, v in args.items()))


def render_value(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def render_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={render_value(v)}" for k, v in sorted(args.items())) or "no arguments"


def _literal(args: dict[str, Any]) -> str:
    return json.dumps(args, ensure_ascii=False, sort_keys=True)


def _next_call(calls: Sequence[ToolCall], n: int) -> ToolCall | None:
    """The next call after ``calls[n]`` in the same session (calls are one tool's, oldest first)."""
    for later in calls[n + 1:]:
        if later.session_id == calls[n].session_id:
            return later
    return None


def distil(calls: Sequence[ToolCall], min_failures: int = 1) -> list[Experience]:
    """Experiences for every tool in ``calls`` (one user's calls, oldest first); the most failed first."""
    by_tool: dict[str, list[ToolCall]] = defaultdict(list)
    for call in calls:
        by_tool[call.tool].append(call)
    out: list[Experience] = []
    for tool, mine in sorted(by_tool.items()):
        out += _tool_experiences(tool, mine, min_failures)
    return sorted(out, key=lambda e: (-e.failed, e.tool, e.key))


def _visible(call: ToolCall) -> ToolCall:
    """The call without its redacted arguments: a secret's placeholder says nothing about what went wrong."""
    if REDACTED not in call.args.values():
        return call
    return replace(call, args={k: v for k, v in call.args.items() if v != REDACTED})


def _tool_experiences(tool: str, calls: list[ToolCall], min_failures: int) -> list[Experience]:
    calls = [_visible(c) for c in calls]
    shape_of = [args_shape(c.args) for c in calls]
    shape_total = Counter(shape_of)
    shape_failed = Counter(s for s, c in zip(shape_of, calls) if not c.ok)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)  # (error class, pattern id) -> call indexes
    for n, call in enumerate(calls):
        if call.ok:
            continue
        shape = shape_of[n]
        by_shape = shape_failed[shape] / shape_total[shape] >= SHAPE_FAILS
        pattern = "shape:" + json.dumps(shape) if by_shape else "literal:" + _literal(call.args)
        groups[(call.error_class or "ToolError", pattern)].append(n)
    tool_ok = sum(c.ok for c in calls)
    found: list[Experience] = []
    for (error_class, pattern), members in groups.items():
        if len(members) < min_failures:
            continue
        latest = calls[members[-1]]
        if pattern.startswith("shape:"):
            shape = shape_of[members[-1]]
            like = shape_total[shape]
            described = ", ".join(f"{k} like {v!r}" for k, v in shape) or "no arguments"
            text = f"{described} (e.g. {render_args(latest.args)})"
        else:
            like = sum(1 for c in calls if _literal(c.args) == _literal(latest.args))
            text = render_args(latest.args)
        changes: Counter[str] = Counter()
        change_of: dict[str, dict[str, Any]] = {}
        retried, sources = 0, [calls[n].id for n in members]
        for n in members:
            after = _next_call(calls, n)
            if after is None:
                continue
            retried += 1
            if after.ok and after.args != calls[n].args:
                change = {k: after.args.get(k) for k in sorted(set(after.args) | set(calls[n].args))
                          if after.args.get(k) != calls[n].args.get(k)}
                key = json.dumps(args_shape(change))  # fixes count together by shape; the latest is the example
                changes[key] += 1
                change_of[key] = change
                sources.append(after.id)
        best = max(changes, key=lambda k: (changes[k], list(change_of).index(k)), default=None)
        error = (latest.error or "").strip().splitlines()[0] if (latest.error or "").strip() else "no message"
        error = error[len(error_class) + 1:].strip() if error.startswith(error_class + ":") else error
        digest = hashlib.sha1(f"{tool}\x00{error_class}\x00{pattern}".encode()).hexdigest()[:16]
        found.append(Experience(
            tool=tool, key=digest, pattern=text, error_class=error_class,
            last_error=error[:160],
            failed=len(members), like=like, instead=change_of[best] if best else None,
            fixed=changes[best] if best else 0, retried=retried, tool_calls=len(calls), tool_ok=tool_ok,
            sources=tuple(sources[-MAX_SOURCES:])))
    return found
