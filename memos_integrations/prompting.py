"""How memories are put in front of a model: one place, shared by MOS.chat, the faces and the local runtime.

Every memory line a model reads is written here: the system-prompt block (MOS.chat, the LangChain
middleware), the cited lines a memory tool returns (``[id] (kind) ...``, so the model can name an id
to forget), and the plain bullet lists of the local runtime. A face never formats its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .items import MemoryItem

DEFAULT_SYSTEM = "You are a helpful assistant with long-term memory."


#: item id -> short texts of the memories it is flagged as conflicting with
#: (:func:`memos_integrations.organize.links.conflict_notes`)
Conflicts = Mapping[str, Sequence[str]]


def format_memory(item: MemoryItem, *, cite: bool = False, conflicts: Sequence[str] = ()) -> str:
    """One memory as a prompt line: ``- [date] speaker: text``; with ``cite``, ``[id] (kind) [date] ...``;
    with ``conflicts`` (the short texts of memories it is flagged as contradicting), the line ends
    ``(conflicts with: "other"; "another")`` so the model knows the two disagree."""
    when = f"[{item.event_time.date().isoformat()}] " if item.event_time else ""
    speaker = item.metadata.get("speaker")
    who = f"{speaker}: " if speaker and item.kind.value == "message" else ""
    lead = f"[{item.id}] ({item.kind.value}) " if cite else "- "
    return f"{lead}{when}{who}{item.text}{conflict_note(conflicts)}"


def conflict_note(conflicts: Sequence[str]) -> str:
    """`` (conflicts with: "a"; "b")`` for the short texts of the memories a line contradicts, or ``""``."""
    return f" (conflicts with: {'; '.join(json.dumps(c, ensure_ascii=False) for c in conflicts)})" if conflicts else ""


#: the fields of a JSON object memory (a LangGraph store value indexed whole) that hold its human text
TEXT_FIELDS = ("text", "content", "memory", "fact", "note", "summary", "description", "value", "data")


def memory_text(item: MemoryItem) -> str:
    """The human text of ``item``: its text, or for a JSON object (a LangGraph store value indexed whole,
    ``{"text": "My bank is Nordea"}``) the first of :data:`TEXT_FIELDS` that holds a string, else its
    string fields as ``key: value``; never the serialized JSON itself unless it holds no string at all.

    >>> memory_text(MemoryItem(text='{"text": "My bank is Nordea.", "tags": ["bank"]}'))
    'My bank is Nordea.'
    >>> memory_text(MemoryItem(text='{"food": "pizza", "drink": "tea"}'))
    'food: pizza; drink: tea'
    """
    text = item.text
    if not text.startswith("{") or not text.rstrip().endswith("}"):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if not isinstance(value, Mapping):
        return text
    return _text_of(value) or text


def _text_of(value: Mapping[str, Any]) -> str:
    for key in TEXT_FIELDS:
        found = value.get(key)
        if isinstance(found, str) and found.strip():
            return found.strip()
        if isinstance(found, Mapping):
            inner = _text_of(found)
            if inner:
                return inner
    return "; ".join(f"{k}: {v.strip()}" for k, v in value.items() if isinstance(v, str) and v.strip())


def bullet_list(header: str, texts: Sequence[str]) -> str:
    """``header`` and one ``- text`` line per memory text, or ``""`` when there are none."""
    return "\n".join([header, *(f"- {t}" for t in texts)]) if texts else ""


def fit_memories(
    items: Sequence[MemoryItem], budget: int | None, cost: Callable[[str], int], spent: int = 0,
    conflicts: Conflicts | None = None,
) -> tuple[list[MemoryItem], list[str]]:
    """The leading ``items`` (best first) whose lines fit ``budget`` (measured by ``cost``), and their lines
    (each marked with its flagged ``conflicts``, see :func:`format_memory`)."""
    chosen: list[MemoryItem] = []
    lines: list[str] = []
    for item in items:
        line = format_memory(item, conflicts=(conflicts or {}).get(item.id, ()))
        price = cost(line)
        if budget is not None and spent + price > budget:
            break
        chosen.append(item)
        lines.append(line)
        spent += price
    return chosen, lines


def memory_system_prompt(
    items: Sequence[MemoryItem], system: str = DEFAULT_SYSTEM, max_words: int | None = None,
    conflicts: Conflicts | None = None,
) -> str:
    """A system prompt listing ``items`` (best first), cut to ``max_words`` words of memories."""
    _, lines = fit_memories(items, max_words, lambda line: len(line.split()), conflicts=conflicts)
    if not lines:
        return system
    return f"{system}\n\nRelevant memories (oldest facts may be outdated):\n" + "\n".join(lines)
