"""What ``cube.add`` returns when the reader is involved: still a list of the items written.

:class:`AddResult` *is* a ``list`` of :class:`~memos_integrations.items.MemoryItem` (the raw messages,
then the memories read from them), so every caller of the old ``list`` return keeps working; the
reader's account rides along as attributes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..items import MemoryItem
from .llm import Usage


class AddResult(list[MemoryItem]):
    """The items written, with ``operations``, ``usage``, ``note`` (fallbacks, failures), ``jobs`` and ``refused``.

    ``operations`` holds tuples: ``("ADD", id, text)``, ``("UPDATE", id, old_text, new_text)``,
    ``("SUPERSEDE", old_id, new_id)``, ``("NOOP", id)``, ``("DELETE", id)``.
    """

    def __init__(self, items: Iterable[MemoryItem] = (), *, operations: Iterable[tuple[Any, ...]] = (),
                 usage: Usage | None = None, note: str | None = None, jobs: Iterable[int] = (),
                 refused: Iterable[dict[str, Any]] = (), mode: str = "fast") -> None:
        super().__init__(items)
        self.operations = list(operations)
        self.usage = usage or Usage()
        self.note = note
        self.jobs = list(jobs)
        self.refused = list(refused)
        self.mode = mode

    @property
    def items(self) -> list[MemoryItem]:
        return list(self)

    def __repr__(self) -> str:
        return (f"AddResult(items={len(self)}, mode={self.mode!r}, operations={len(self.operations)}, "
                f"tokens={self.usage.tokens}, note={self.note!r})")
