"""The LLM reader's organiser (and tool-lesson) calls for one cube and user: counted in the cube's usage ledger, held to its budgets.

The organiser (:mod:`memos_integrations.organize`) asks a reader, duck-typed, for ``summarize(texts)``
and ``resolve_conflict(newer, older)``. An :class:`~.reader.LLMReader` answers them itself, but only
this binding (``reader.for_cube(cube, user_id)``, which the organiser uses when the reader offers it)
makes them cost what window reads cost: each call is checked against ``cube_token_budget`` and
``user_token_budget`` first, and what it spent, failed or not, goes to the same ledger rows
(``cube.reader_engine.usage(user_id)``). Errors are raised as they are; the organiser falls back and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import BudgetExceededError, ReaderError
from ..items import MemoryItem
from . import prompts
from .llm import Usage, estimate_tokens

if TYPE_CHECKING:
    from ..storage.reader_usage import UsageLedger
    from .config import ReaderConfig
    from .reader import LLMReader

T = TypeVar("T")


def check_budget(ledger: UsageLedger, config: ReaderConfig, user: str | None, estimate: int, what: str = "this window") -> None:
    """Refuse a call that would take the cube's or the user's spending past its budget.

    Raises:
        BudgetExceededError: naming the budget and what was spent.
    """
    for scope, budget in (("cube", config.cube_token_budget), (f"user:{user}", config.user_token_budget if user else None)):
        if budget is None:
            continue
        used = ledger.tokens(scope)
        if used + estimate > budget:
            raise BudgetExceededError(
                f"the {scope} token budget is {budget} and {used} are spent; {what} needs about {estimate}. "
                "Raise ReaderConfig.user_token_budget / cube_token_budget, then cube.retry_failed()")


class CubeBoundReader:
    """``reader``'s organiser calls for ``user_id``'s memories, counted in ``ledger`` (see the module doc)."""

    def __init__(self, reader: LLMReader, ledger: UsageLedger, user_id: str | None) -> None:
        self.reader = reader
        self.ledger = ledger
        self.user_id = user_id
        #: what this binding's calls cost so far (the organiser's report shows it)
        self.usage = Usage()

    @property
    def name(self) -> str:
        return self.reader.name

    def summarize(self, texts: Sequence[str]) -> str:
        chars = len(prompts.SUMMARIZE_SYSTEM) + sum(min(len(t), 300) + 6 for t in texts[:40])
        return self._call(chars, "a summary", lambda: _pair(self.reader.summary(texts)))

    def resolve_conflict(self, newer: MemoryItem, older: MemoryItem) -> bool:
        chars = len(prompts.CONFLICT_SYSTEM) + min(len(newer.text), 300) + min(len(older.text), 300) + 60
        return self._call(chars, "a conflict decision", lambda: _pair(self.reader.conflict(newer, older)))

    def lesson(self, tool: str, facts: str, calls: Sequence[str]) -> str:
        chars = len(prompts.LESSON_SYSTEM) + len(tool) + min(len(facts), 600) + sum(min(len(c), 300) + 3 for c in calls[-5:])
        return self._call(chars, "a tool lesson", lambda: self.reader.lesson(tool, facts, calls))

    def _call(self, chars: int, what: str, call: Callable[[], tuple[T, Usage]]) -> T:
        check_budget(self.ledger, self.reader.config, self.user_id, estimate_tokens("x" * chars), what)
        try:
            value, usage = call()
        except ReaderError as exc:
            spent = getattr(exc, "usage", None)
            if isinstance(spent, Usage) and spent.calls:
                self._count(spent)
            raise
        self._count(usage)
        return value

    def _count(self, usage: Usage) -> None:
        self.usage = self.usage + usage
        scopes = ["cube"] + ([f"user:{self.user_id}"] if self.user_id is not None else [])
        self.ledger.add(scopes, usage.prompt_tokens, usage.completion_tokens, usage.calls, usage.seconds, usage.cost or 0.0)


def _pair(result: tuple[Any, ...]) -> tuple[Any, Usage]:
    """(value, usage) from ``summary``'s (text, usage) or ``conflict``'s (supersede, reason, usage)."""
    return result[0], result[-1]
