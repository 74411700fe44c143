"""``ToolMemory``: record an agent's tool calls, distil experiences from them, and say them before a call.

Where it sits: between the faces' tool-call hooks (``langchain.tool_memory``, ``langgraph.tool_memory``)
and a cube. Calls go to the cube's ``tool_calls`` table (``storage/tables/toolcalls.py``): a log that is
written on every call, so recording embeds nothing and costs one small insert. Experiences are cube items
(kind ``fact``, tags ``tool_experience`` and ``tool:<name>``, metadata with the counts, ``sources`` the call
ids), so they are versioned, audited, exported and deleted like every other memory, and searchable.
They are written as the user they belong to (the principal a MOS cube view accepts), and a cube view
with only read access records nothing (its writes are refused).

Scope: every method names one user; calls and experiences are written and read for that user only, so
one user's tool memory never reaches another's prompt. The faces decide who the user is with
:func:`memos_integrations.access.resolve_scope`; this class trusts the ``user_id`` it is given.

Sync/async (see :mod:`memos_integrations.aio`): the work is synchronous; each ``a*`` method runs its sync
twin in a worker thread and returns what it returns.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..access import normalize_id
from ..aio import in_thread
from ..errors import InvalidInputError, InvalidTypeError
from ..face_api import CubeAPI, as_cube
from ..items import Kind, MemoryItem
from ..storage.tables.toolcalls import ToolCalls
from ..textual.filters import MemoryFilter
from .distil import Experience, Writer, distil
from .record import ToolCall, cap, safe_args, scrubbed

_log = logging.getLogger(__name__)

TAG = "tool_experience"
#: ``cube.search(..., metadata=NOT_LESSONS)`` leaves tool lessons out (each carries ``experience_key``):
#: the faces' default recall uses it, since the tool-memory middleware shows lessons before the tool call
NOT_LESSONS: dict[str, Any] = {"experience_key": {"$exists": False}}
HEADER = "Tool memory: lessons from your earlier calls of these tools (success rates from recorded calls):"


def tool_tag(tool: str) -> str:
    return f"tool:{tool}"


class ToolMemory:
    """Tool calls and the experiences distilled from them, per user, in one cube.

    Example:
        >>> import tempfile
        >>> from memos_integrations import MemCube
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> memory = ToolMemory(cube)
        >>> _ = memory.record("maya", "lookup_order", {"order_id": "#12"}, ok=False,
        ...                   error="order id must be digits", error_class="ValueError")
        >>> _ = memory.record("maya", "lookup_order", {"order_id": "12"}, ok=True)
        >>> print(memory.render("maya", ["lookup_order"]).splitlines()[1])
        - lookup_order [1 of 2 calls succeeded, 50%]: avoid calling it with order_id like '#9' (e.g. order_id='#12'): 1 of 1 such calls failed (ValueError: order id must be digits). Instead use order_id='12' (worked in 1 of 1 retries).
        >>> memory.render("bob", ["lookup_order"])
        ''
    """

    def __init__(
        self,
        cube: CubeAPI,
        *,
        max_arg_chars: int = 2000,
        error_chars: int = 300,
        output_chars: int = 200,
        auto_distil: bool = True,
        min_failures: int = 1,
        history: int = 500,
        writer: Writer | None = None,
    ) -> None:
        """Args:
            cube: where calls (its SQL database) and experiences (its items) are kept.
            max_arg_chars: JSON characters kept of one call's arguments (after redaction).
            error_chars: characters kept of an error message.
            output_chars: characters kept of a tool's output (0 keeps none: outputs may hold anything).
            auto_distil: re-distil a tool's experiences after a failure and after the retry that follows one.
            min_failures: failures of one pattern before it becomes an experience.
            history: the latest calls of a tool that distillation reads.
            writer: optional ``(experience, calls) -> text`` (an LLM reader); the extractive text otherwise.
        """
        self.cube = as_cube(cube, "ToolMemory")
        db = getattr(getattr(self.cube, "store", None), "db", None)
        if db is None:
            raise InvalidInputError("ToolMemory needs a cube with an SQL store (cube.store.db); open a local MemCube")
        for name, value, low in (("max_arg_chars", max_arg_chars, 64), ("error_chars", error_chars, 0),
                                 ("output_chars", output_chars, 0), ("min_failures", min_failures, 1),
                                 ("history", history, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
        if writer is not None and not callable(writer):
            raise InvalidTypeError(f"writer must be a callable (experience, calls) -> str, got {type(writer).__name__}")
        self.table = ToolCalls(db)
        self.max_arg_chars, self.error_chars, self.output_chars = max_arg_chars, error_chars, output_chars
        self.auto_distil, self.min_failures, self.history, self.writer = auto_distil, min_failures, history, writer
        self._distilling = threading.Lock()  # parallel tool calls (ToolNode runs them in threads) distil one at a time

    # -- record -------------------------------------------------------------------------------------
    def record(
        self,
        user_id: str,
        tool: str,
        args: Any,
        *,
        ok: bool,
        latency_ms: float = 0.0,
        error: str | None = None,
        error_class: str | None = None,
        output: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        call_id: str | None = None,
    ) -> ToolCall:
        """Store one call (arguments capped and redacted); distil the tool again when it just failed or recovered.

        Args:
            user_id: whose call it was (required).
            tool: the tool's name.
            args: the arguments the model gave (anything: made JSON-safe, capped, secrets redacted).
            ok: whether the call succeeded.
            latency_ms: how long it ran.
            error, error_class: the error's message and exception class, for a failure.
            output: the tool's output (kept up to ``output_chars``).
            agent_id, session_id, call_id: the agent, the session (thread) and the model's tool-call id.

        Returns:
            The stored :class:`ToolCall`.

        Raises:
            InvalidInputError / InvalidTypeError: no user, or a tool name that is not a non-empty string.
        """
        user = normalize_id(user_id)
        if user is None:
            raise InvalidInputError("a tool call needs a user_id; resolve the run's user before recording")
        if not isinstance(tool, str) or not tool.strip():
            raise InvalidInputError(f"tool must be a non-empty name, got {tool!r}")
        session = normalize_id(session_id, "session_id")
        call = ToolCall(
            id=uuid.uuid4().hex, user_id=user, tool=tool.strip()[:200], args=safe_args(args, self.max_arg_chars),
            ok=bool(ok), latency_ms=float(latency_ms), created_at=time.time(),
            agent_id=normalize_id(agent_id, "agent_id"), session_id=session,
            call_id=cap(call_id, 200), error_class=None if ok else cap(error_class or "ToolError", 100),
            error=None if ok else scrubbed(error, self.error_chars), output=scrubbed(output, self.output_chars))
        ok_before = self.table.append(call.row())
        if self.auto_distil and (not call.ok or ok_before is False):
            self.distil(user, [call.tool])
        return call

    def calls(self, user_id: str, tools: Sequence[str] | None = None, limit: int = 100) -> list[ToolCall]:
        """The user's latest ``limit`` calls (of ``tools`` when given), oldest first."""
        return [ToolCall.from_row(r) for r in self.table.rows(self._user(user_id), tools, limit)]

    def stats(self, user_id: str, tools: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
        """``{tool: (calls, successes)}`` over all the user's recorded calls."""
        return self.table.counts(self._user(user_id), tools)

    # -- distil -------------------------------------------------------------------------------------
    def distil(self, user_id: str, tools: Sequence[str] | None = None) -> list[MemoryItem]:
        """Rebuild the user's experiences (of ``tools``, else of every tool) from the recorded calls.

        An experience whose pattern is still seen is updated in place (a new version, same id) when its
        text or counts changed; one whose calls are gone is deleted. Returns the live experiences.
        """
        user = self._user(user_id)
        with self._distilling:
            return self._distil(user, tools)

    def _distil(self, user: str, tools: Sequence[str] | None) -> list[MemoryItem]:
        if tools is None:  # every tool with calls, and every tool with a lesson (whose calls may be gone)
            known = {str(i.metadata.get("tool")) for i in self._items(user, None)}
            names = sorted(known | set(self.table.counts(user)))
        else:
            names = list(tools)
        kept: list[MemoryItem] = []
        for tool in names:
            calls = self.calls(user, [tool], self.history)
            found = {e.key: e for e in distil(calls, self.min_failures)}
            existing: dict[str, MemoryItem] = {}
            stale: list[str] = []  # a second item of one key (written by another process meanwhile)
            for item in sorted(self._items(user, [tool]), key=lambda i: i.id):  # ids grow with time: keep the first
                key = str(item.metadata.get("experience_key"))
                if key in existing:
                    stale.append(item.id)
                else:
                    existing[key] = item
            for key, exp in found.items():
                text = self._text(exp, calls)
                meta = exp.metadata()
                old = existing.pop(key, None)
                if old is None:
                    kept += self.cube.add(memory=text, user_id=user, kind=Kind.FACT, tags=[TAG, tool_tag(tool)],
                                          metadata=meta, sources=list(exp.sources), principal=user)
                elif old.text != text or old.metadata != meta or tuple(old.sources) != exp.sources:
                    kept.append(self.cube.update(old.id, text=text, metadata=meta, sources=list(exp.sources),
                                                 principal=user))
                else:
                    kept.append(old)
            stale += [i.id for i in existing.values()]
            if stale:
                self.cube.delete(stale, principal=user)
        return kept

    def _text(self, exp: Experience, calls: Sequence[ToolCall]) -> str:
        if self.writer is None:
            return exp.text()
        text = self.writer(exp, [c for c in calls if c.id in set(exp.sources)])
        if not isinstance(text, str) or not text.strip():
            _log.warning("the tool-memory writer returned no text for %s; keeping the extractive wording", exp.tool)
            return exp.text()
        return text.strip()[:1000]

    # -- surface ------------------------------------------------------------------------------------
    def experiences(self, user_id: str, tools: Sequence[str] | None = None) -> list[MemoryItem]:
        """The user's live experiences (of ``tools`` when given), most failed first."""
        return self._items(self._user(user_id), tools)

    def render(self, user_id: str, tools: Sequence[str]) -> str:
        """The block shown to the model before it calls ``tools``: per tool its success rate and lessons.

        Tools never called by this user are left out; an empty string when there is nothing to say.
        """
        user = self._user(user_id)
        names = sorted({t for t in tools if isinstance(t, str)})
        if not names:
            return ""
        counts = self.table.counts(user, names)
        lessons: dict[str, list[str]] = {}
        for item in self._items(user, names):
            lessons.setdefault(str(item.metadata.get("tool")), []).append(item.text)
        lines = [HEADER]
        for tool in names:
            if tool not in counts:
                continue
            total, ok = counts[tool]
            rate = f"[{ok} of {total} calls succeeded, {round(100 * ok / total)}%]"
            found = lessons.get(tool, [])
            prefix = f"{tool}: "
            if not found:
                lines.append(f"- {tool} {rate}")
            for text in found:
                body = text[len(prefix):] if text.startswith(prefix) else text
                lines.append(f"- {tool} {rate}: {body}")
        return "\n".join(lines) if len(lines) > 1 else ""

    def forget(self, user_id: str) -> int:
        """Delete the user's calls and experiences; return how many calls went."""
        user = self._user(user_id)
        items = self._items(user, None)
        if items:
            self.cube.delete([i.id for i in items], principal=user)
        return self.table.forget(user)

    def _items(self, user: str, tools: Sequence[str] | None) -> list[MemoryItem]:
        tags = [tool_tag(t) for t in tools] if tools is not None else [TAG]
        if not tags:
            return []
        flt = MemoryFilter(user_id=user, tags_all=[TAG], tags_any=tags)
        items: list[MemoryItem] = self.cube.text_mem.list_items(flt)
        return sorted(items, key=lambda i: (-int(i.metadata.get("failed", 0)), i.text))

    @staticmethod
    def _user(user_id: str) -> str:
        user = normalize_id(user_id)
        if user is None:
            raise InvalidInputError("tool memory is per user: pass the user_id whose calls to read")
        return user

    # -- async twins (same results, run in a worker thread) -----------------------------------------
    async def arecord(self, user_id: str, tool: str, args: Any, **kwargs: Any) -> ToolCall:
        return await in_thread(self.record, user_id, tool, args, **kwargs)

    async def acalls(self, user_id: str, tools: Sequence[str] | None = None, limit: int = 100) -> list[ToolCall]:
        return await in_thread(self.calls, user_id, tools, limit)

    async def astats(self, user_id: str, tools: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
        return await in_thread(self.stats, user_id, tools)

    async def adistil(self, user_id: str, tools: Sequence[str] | None = None) -> list[MemoryItem]:
        return await in_thread(self.distil, user_id, tools)

    async def aexperiences(self, user_id: str, tools: Sequence[str] | None = None) -> list[MemoryItem]:
        return await in_thread(self.experiences, user_id, tools)

    async def arender(self, user_id: str, tools: Sequence[str]) -> str:
        return await in_thread(self.render, user_id, tools)

    async def aforget(self, user_id: str) -> int:
        return await in_thread(self.forget, user_id)
