"""How memories are put in front of a model: one place, shared by MOS.chat and the faces."""

from __future__ import annotations

from collections.abc import Sequence

from .items import MemoryItem

DEFAULT_SYSTEM = "You are a helpful assistant with long-term memory."


def format_memory(item: MemoryItem) -> str:
    when = f"[{item.event_time.date().isoformat()}] " if item.event_time else ""
    speaker = item.metadata.get("speaker")
    who = f"{speaker}: " if speaker and item.kind.value == "message" else ""
    return f"- {when}{who}{item.text}"


def memory_system_prompt(items: Sequence[MemoryItem], system: str = DEFAULT_SYSTEM, max_words: int | None = None) -> str:
    """A system prompt listing ``items`` (best first), cut to ``max_words`` words of memories."""
    lines: list[str] = []
    used = 0
    for item in items:
        line = format_memory(item)
        words = len(line.split())
        if max_words is not None and used + words > max_words:
            break
        lines.append(line)
        used += words
    if not lines:
        return system
    return f"{system}\n\nRelevant memories (oldest facts may be outdated):\n" + "\n".join(lines)
