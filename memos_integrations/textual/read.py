"""Readers turn raw input (chat messages) into memory items.

:class:`FastReader` needs no LLM: each message becomes one ``message`` item that keeps its source
message id, speaker, session and an event time parsed from the free-text timestamp the caller gives
("1:56 pm on 8 May, 2023"). Relative expressions in the text ("yesterday", "last week") are resolved
against that time and recorded in ``metadata["refers_to"]``, which is what a "when" question needs.

:class:`MemoryReader` is the seam for LLM-backed readers (fact extraction, summaries).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

from ..errors import EmptyTextError, InvalidInputError, InvalidTypeError, OversizedInputError
from ..items import Kind, MemoryItem, check_time, check_utf8
from .embed import attachment_suffix

_MONTHS = {m: i + 1 for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"])}
_MONTHS.update({m[:3]: n for m, n in list(_MONTHS.items())})
_MONTHS["sept"] = 9
# The clock part needs ':' or am/pm, so "27 June" is never read as 2 o'clock on the 7th.
_CLOCK_DATE = re.compile(
    r"^\s*(?:(\d{1,2})(?=:|\s*[ap]\.?m)(?::(\d{2}))?\s*([ap]\.?m\.?)?\s*(?:on|,)?\s*)?(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]+)\.?,?\s+(\d{4})\s*$",
    re.I,
)
_MONTH_FIRST = re.compile(
    r"^\s*(?:(\d{1,2})(?=:|\s*[ap]\.?m)(?::(\d{2}))?\s*([ap]\.?m\.?)?\s*(?:on|,)?\s*)?([A-Za-z]+)\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\s*$",
    re.I,
)


def parse_timestamp(value: Any) -> datetime | None:
    """Parse what people write as a time: ISO 8601, epoch seconds, or "1:56 pm on 8 May, 2023".

    Naive times are taken as UTC. ``None`` stays ``None``; anything unparseable, or outside the
    times a cube stores (:data:`~memos_integrations.items.MIN_TIME` to ``MAX_TIME``), is an error
    rather than a silently wrong date or a cube that can no longer be read.

    Example:
        >>> parse_timestamp("1:56 pm on 8 May, 2023").isoformat()
        '2023-05-08T13:56:00+00:00'
        >>> parse_timestamp("May 8, 2023").date().isoformat()
        '2023-05-08'
    """
    parsed = _parse_time(value)
    return None if parsed is None else check_time(parsed, f"time {value!r}" if isinstance(value, str) else "time")


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise InvalidInputError(
                f"{value!r} is not a time in epoch seconds (milliseconds? divide by 1000)"
            ) from None
    if not isinstance(value, str):
        raise InvalidTypeError(f"timestamp must be a string, datetime or epoch seconds, got {type(value).__name__}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    except ValueError:
        pass
    for pattern, day_first in ((_CLOCK_DATE, True), (_MONTH_FIRST, False)):
        m = pattern.match(text)
        if not m:
            continue
        hour, minute, ampm = m.group(1), m.group(2), m.group(3)
        day, month_name = (m.group(4), m.group(5)) if day_first else (m.group(5), m.group(4))
        month = _MONTHS.get(month_name.lower())
        if month is None:
            continue
        h = int(hour or 0)
        if ampm:
            h = h % 12 + (12 if ampm.lower().startswith("p") else 0)
        try:
            return datetime(int(m.group(6)), month, int(day), h, int(minute or 0), tzinfo=timezone.utc)
        except ValueError:
            break
    raise InvalidInputError(
        f"cannot read {value!r} as a time; use ISO 8601 ('2023-05-08T13:56'), epoch seconds, or '1:56 pm on 8 May, 2023'"
    )


_ISO_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")
_HAS_CLOCK = re.compile(r":|\d\s*[ap]\.?m\b|T\d", re.I)


def parse_time_bound(value: Any, *, upper: bool) -> datetime | None:
    """Parse a range bound; an upper bound given as a day ("2023-06-30", "30 June 2023") covers that whole day.

    Example:
        >>> parse_time_bound("2023-06-30", upper=True).isoformat()
        '2023-06-30T23:59:59.999999+00:00'
    """
    parsed = parse_timestamp(value)
    if not upper or parsed is None or isinstance(value, datetime):
        return parsed
    day_only = isinstance(value, date) or (
        isinstance(value, str) and (_ISO_DATE.match(value) is not None or not _HAS_CLOCK.search(value))
    )
    return parsed + timedelta(days=1, microseconds=-1) if day_only else parsed


_NUM = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "few": 3, "couple": 2}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_RELATIVE = re.compile(
    r"\b(yesterday|today|tonight|last night|tomorrow|last (?:week|weekend|month|year|"
    + "|".join(_WEEKDAYS) + r")|next (?:week|month|year)|this (?:week|month|year)|"
    r"(\d+|a|an|one|two|three|four|five|six|seven|few|couple(?: of)?) (day|week|month|year)s? ago)\b",
    re.I,
)


def resolve_relative(text: str, at: datetime) -> list[tuple[str, date, date]]:
    """Relative time expressions in ``text`` resolved against ``at``: (expression, first day, last day).

    Example:
        >>> resolve_relative("I went there yesterday", datetime(2023, 5, 8))
        [('yesterday', datetime.date(2023, 5, 7), datetime.date(2023, 5, 7))]
    """
    day = at.date()
    out: list[tuple[str, date, date]] = []
    for m in _RELATIVE.finditer(text):
        try:
            span = _span(m, day)
        except (OverflowError, ValueError):
            # "built 4500 years ago", "tomorrow" on 9999-12-31: outside the calendar datetime
            # represents, so the expression stays in the text without a resolved time
            continue
        out.append((m.group(0), span[0], span[1]))
    return out


def _span(m: re.Match[str], day: date) -> tuple[date, date]:
    """The first and last day an expression matched by ``_RELATIVE`` means, seen from ``day``."""
    expr = m.group(1).lower()
    span: tuple[date, date]
    if expr in ("today", "tonight"):
        span = (day, day)
    elif expr in ("yesterday", "last night"):
        span = (day - timedelta(days=1),) * 2
    elif expr == "tomorrow":
        span = (day + timedelta(days=1),) * 2
    elif expr in ("last week", "last weekend"):
        start = day - timedelta(days=day.weekday() + 7)
        span = (start + timedelta(days=5), start + timedelta(days=6)) if expr.endswith("end") else (start, start + timedelta(days=6))
    elif expr == "this week":
        start = day - timedelta(days=day.weekday())
        span = (start, start + timedelta(days=6))
    elif expr == "next week":
        start = day - timedelta(days=day.weekday()) + timedelta(days=7)
        span = (start, start + timedelta(days=6))
    elif expr.split()[-1] in _WEEKDAYS:
        back = (day.weekday() - _WEEKDAYS.index(expr.split()[-1])) % 7 or 7
        span = (day - timedelta(days=back),) * 2
    elif expr.endswith("month"):
        shift = {"last": -1, "this": 0, "next": 1}[expr.split()[0]]
        y, mo = divmod(day.year * 12 + day.month - 1 + shift, 12)
        first = date(y, mo + 1, 1)
        y2, mo2 = divmod(y * 12 + mo + 1, 12)
        span = (first, date(y2, mo2 + 1, 1) - timedelta(days=1))
    elif expr.endswith("year"):
        shift = {"last": -1, "this": 0, "next": 1}[expr.split()[0]]
        span = (date(day.year + shift, 1, 1), date(day.year + shift, 12, 31))
    else:  # "<n> <unit>s ago"
        count_word = m.group(2).lower().replace(" of", "")
        n = int(count_word) if count_word.isdigit() else _NUM.get(count_word, 1)
        days = {"day": 1, "week": 7, "month": 30, "year": 365}[m.group(3).lower()] * n
        span = (day - timedelta(days=days),) * 2
    return span


class MemoryReader(Protocol):
    """Turns a batch of messages into memory items (the seam for LLM-backed readers)."""

    method: str

    def read(self, messages: Sequence[Mapping[str, Any]], *, context: Mapping[str, Any]) -> list[MemoryItem]: ...


def check_text(text: Any, max_chars: int, what: str = "text") -> str:
    """Reject what cannot become a memory, with a message that says what to send instead."""
    if not isinstance(text, str):
        raise InvalidTypeError(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise EmptyTextError(f"{what} is empty or whitespace; send the words to remember")
    if len(text) > max_chars:
        raise OversizedInputError(
            f"{what} has {len(text)} characters, above this cube's limit of {max_chars}; split it into documents "
            "(add it as chunks) or raise CubeConfig.max_text_chars"
        )
    return check_utf8(text, what)


class FastReader:
    """One message -> one ``message`` item, no LLM.

    A message may carry a ``caption`` (what a shared photo shows): it is appended to the text as
    ``[shares a photo: ...]`` (what a model reads and keywords match) and kept in
    ``metadata["caption"]``, so the embedding gives it a view of its own (:func:`.embed.embed_views`).

    ``context_turns`` prepends that many preceding turns of the same batch to each item's *index*
    text (not its shown text): an answer such as "Yes, last Friday" becomes findable by the question
    it answers. Measured on LoCoMo dev in ``benchmarks/bench_retrieval.py``.
    """

    method = "fast_reader"

    def __init__(self, max_chars: int = 32_000, context_turns: int = 1) -> None:
        self.max_chars = max_chars
        self.context_turns = context_turns

    def read(self, messages: Sequence[Mapping[str, Any]], *, context: Mapping[str, Any]) -> list[MemoryItem]:
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise InvalidTypeError("messages must be a list of {'role', 'content'} dicts")
        default_time = parse_timestamp(context.get("timestamp"))
        items: list[MemoryItem] = []
        turns: list[str] = list(context.get("previous_turns") or [])
        for n, msg in enumerate(messages):
            if not isinstance(msg, Mapping):
                raise InvalidTypeError(f"message {n} must be a dict with 'role' and 'content', got {type(msg).__name__}")
            text = check_text(msg.get("content"), self.max_chars, f"message {n} content")
            caption = msg.get("caption")  # a shared photo's description: shown and embedded as its own view
            if caption is not None:
                caption = check_text(caption, self.max_chars, f"message {n} caption")
                text = check_text(text + attachment_suffix(caption), self.max_chars, f"message {n} content and caption")
            role = msg.get("role", "user")
            if not isinstance(role, str):
                raise InvalidTypeError(f"message {n} role must be a string")
            speaker = msg.get("name") or role
            if not isinstance(speaker, str):
                raise InvalidTypeError(f"message {n} name must be a string, got {type(speaker).__name__}")
            extra = msg.get("metadata") or {}
            if not isinstance(extra, Mapping):
                raise InvalidTypeError(f"message {n} metadata must be a dict, got {type(extra).__name__}")
            when = parse_timestamp(msg["timestamp"]) if msg.get("timestamp") is not None else default_time
            metadata: dict[str, Any] = {"role": role, "speaker": speaker}
            metadata.update(extra)
            if caption is not None:
                metadata["caption"] = caption
            if when is not None:
                mentions = resolve_relative(text, when)
                if mentions:
                    metadata["refers_to"] = [
                        {"expression": e, "from": a.isoformat(), "to": b.isoformat()} for e, a, b in mentions
                    ]
            sources = [str(msg["id"])] if msg.get("id") is not None else []
            line = f"{speaker}: {text}"
            items.append(
                MemoryItem(
                    text=text,
                    kind=Kind.MESSAGE,
                    user_id=context.get("user_id"),
                    agent_id=context.get("agent_id"),
                    session_id=context.get("session_id"),
                    cube_id=context.get("cube_id"),
                    event_time=when,
                    sources=sources,
                    created_by=context.get("principal") or context.get("user_id"),
                    method=self.method,
                    confidence=1.0,
                    tags=list(context.get("tags") or []),
                    metadata=metadata,
                    context="\n".join(turns[-self.context_turns:] + [f"{speaker}:"]) if self.context_turns else f"{speaker}:",
                )
            )
            turns.append(line)
        return items
