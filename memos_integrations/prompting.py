"""How memories are put in front of a model: one place, shared by MOS.chat, the faces and the local runtime.

Every memory line a model reads is written here: the system-prompt block (MOS.chat, the LangChain
middleware), the cited lines a memory tool returns (``[id] (kind) ...``, so the model can name an id
to forget), and the plain bullet lists of the local runtime. A face never formats its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .items import MemoryItem

DEFAULT_SYSTEM = "You are a helpful assistant with long-term memory."


def format_memory(item: MemoryItem, *, cite: bool = False) -> str:
    """One memory as a prompt line: ``- [date] speaker: text``; with ``cite``, ``[id] (kind) [date] ...``."""
    when = f"[{item.event_time.date().isoformat()}] " if item.event_time else ""
    speaker = item.metadata.get("speaker")
    who = f"{speaker}: " if speaker and item.kind.value == "message" else ""
    lead = f"[{item.id}] ({item.kind.value}) " if cite else "- "
    return f"{lead}{when}{who}{item.text}"


def bullet_list(header: str, texts: Sequence[str]) -> str:
    """``header`` and one ``- text`` line per memory text, or ``""`` when there are none."""
    return "\n".join([header, *(f"- {t}" for t in texts)]) if texts else ""


def fit_memories(
    items: Sequence[MemoryItem], budget: int | None, cost: Callable[[str], int], spent: int = 0
) -> tuple[list[MemoryItem], list[str]]:
    """The leading ``items`` (best first) whose lines fit ``budget`` (measured by ``cost``), and their lines."""
    chosen: list[MemoryItem] = []
    lines: list[str] = []
    for item in items:
        line = format_memory(item)
        price = cost(line)
        if budget is not None and spent + price > budget:
            break
        chosen.append(item)
        lines.append(line)
        spent += price
    return chosen, lines


def memory_system_prompt(
    items: Sequence[MemoryItem], system: str = DEFAULT_SYSTEM, max_words: int | None = None
) -> str:
    """A system prompt listing ``items`` (best first), cut to ``max_words`` words of memories."""
    _, lines = fit_memories(items, max_words, lambda line: len(line.split()))
    if not lines:
        return system
    return f"{system}\n\nRelevant memories (oldest facts may be outdated):\n" + "\n".join(lines)
