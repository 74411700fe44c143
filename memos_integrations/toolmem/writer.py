"""Lessons worded by the LLM reader: the ``writer`` of :class:`~.memory.ToolMemory`, from an ``LLMReader``.

``ToolMemory(cube, writer=LessonWriter(reader, cube))`` (or ``reader.tool_lesson_writer(cube)``) asks
the model once per new or changed lesson: the extractive facts (pattern, counts, error, the change that
worked) and the last few calls go in, one or two sentences come out. Distillation runs on every
failure, so a lesson whose facts did not change is not asked again (kept per writer, bounded). With a
local cube (a ``MemCube``), each call is checked against the reader's budgets and counted in that cube's usage ledger under
the calls' user, as window reads are. A reader error never breaks the agent's tool call: it is logged
and the extractive wording is kept (``ToolMemory`` falls back on an empty text).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ..errors import MemosError
from .distil import Experience
from .record import ToolCall

_log = logging.getLogger(__name__)
#: lessons remembered per writer (facts -> wording), so an unchanged lesson costs no call
CACHE = 512


class LessonWriter:
    """``(experience, calls) -> text`` with an LLM reader (see the module doc)."""

    def __init__(self, reader: Any, cube: Any = None) -> None:
        self.reader = reader
        self.cube = cube
        self._done: OrderedDict[str, str] = OrderedDict()
        self.errors = 0

    def __call__(self, exp: Experience, calls: Sequence[ToolCall]) -> str:
        facts = exp.text()
        if facts in self._done:
            self._done.move_to_end(facts)
            return self._done[facts]
        shown = [_call_line(c) for c in calls]
        user = next((c.user_id for c in calls), None)
        engine = getattr(self.cube, "reader_engine", None)  # a MemCube's; a MOS view or remote cube has none
        try:
            if engine is not None:
                from ..readers.organizing import CubeBoundReader

                text = CubeBoundReader(self.reader, engine.ledger, user).lesson(exp.tool, facts, shown)
            else:
                text = self.reader.lesson(exp.tool, facts, shown)[0]
        except MemosError as exc:
            self.errors += 1
            _log.warning("the LLM could not word the %s lesson (%s: %s); keeping the extractive wording",
                         exp.tool, type(exc).__name__, str(exc)[:200])
            return ""
        self._done[facts] = text
        while len(self._done) > CACHE:
            self._done.popitem(last=False)
        return text


def _call_line(call: ToolCall) -> str:
    args = json.dumps(call.args, ensure_ascii=False, sort_keys=True)[:200]
    return f"{call.tool}({args}) -> " + ("ok" if call.ok else f"failed: {call.error_class}: {(call.error or '')[:120]}")
