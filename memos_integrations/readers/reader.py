"""LLMReader: typed memories out of a window of messages, and one reconciliation decision per window.

Two LLM calls at most per window: **extract** (facts, explicit and implicit preferences, events with
their time, entities and relations, explicit requests to forget) and **reconcile** (for the
candidates and the user's nearest existing memories, one of ADD / UPDATE / SUPERSEDE / DELETE / NOOP
each). The second call is skipped when there is nothing to reconcile against. Everything the
model names is checked here: a label it was not shown is refused, DELETE needs an explicit request
to forget in the window, and times are resolved on the cube's side from the message time.

This module only talks to the model and validates; :mod:`.engine` stores and applies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import InvalidInputError, InvalidTypeError, ReaderError
from ..items import Kind, MemoryItem
from ..textual.read import parse_timestamp, resolve_relative
from . import prompts
from .config import ReaderConfig
from .llm import ChatBackend, LangChainBackend, OpenAIBackend, Usage
from .parse import ReplyNotJSON, parse_object

OPS = ("ADD", "UPDATE", "SUPERSEDE", "DELETE", "NOOP")
#: what one summary call shows the model: members at most, characters of each
MAX_SUMMARY_TEXTS, MAX_SUMMARY_CHARS = 40, 300
#: the latest calls one lesson call shows the model
MAX_LESSON_CALLS = 5
#: memories kept of one extraction reply: at least MIN_CANDIDATES, else CANDIDATES_PER_MESSAGE per message
MIN_CANDIDATES, CANDIDATES_PER_MESSAGE = 20, 3
#: characters kept of one entity or relation part the model names (they go into metadata and the graph)
MAX_NAME_CHARS = 200
#: DELETE is applied only when the window itself asks to forget (the model alone cannot delete)
FORGET_WORDS = re.compile(r"\b(forget|delete|erase|remove|don'?t (?:remember|keep)|stop remembering)\b", re.I)


@dataclass
class WindowMessage:
    """One raw message of a window, as stored (``id`` is the cube's item id)."""

    id: str
    text: str
    speaker: str
    time: datetime | None = None
    message_id: str | None = None


@dataclass
class Candidate:
    """A memory the model extracted, before reconciliation."""

    label: str
    kind: Kind
    text: str
    sources: list[str]
    message_ids: list[str]
    valid_from: datetime | None
    event_time: datetime | None = None
    preference: str | None = None
    confidence: float = 0.8
    entities: list[str] = field(default_factory=list)
    relations: list[list[str]] = field(default_factory=list)
    #: the start of the message it came from: tells a correction ("actually, ...") from a change
    quote: str = ""


@dataclass
class Decision:
    op: str
    candidate: Candidate | None
    target: str | None
    reason: str = ""


@dataclass
class Extraction:
    candidates: list[Candidate]
    forget: list[str]
    usage: Usage
    #: what the reply held beyond the per-window caps (kept in the job's and the add's ``refused``)
    refused: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Reconciliation:
    decisions: list[Decision]
    refused: list[dict[str, Any]]
    usage: Usage


class LLMReader:
    """Reads windows of messages with an LLM. Build it with :meth:`from_openai` or :meth:`from_langchain`.

    Example:
        >>> reader = LLMReader.from_openai(model="qwen2.5", base_url="http://127.0.0.1:11434/v1", api_key="none")
        >>> reader.config.model, "none" in reader.config.model_dump_json()
        ('qwen2.5', False)
    """

    method = "llm_reader"

    def __init__(self, backend: ChatBackend, config: ReaderConfig) -> None:
        self.backend = backend
        self.config = config

    @classmethod
    def from_openai(cls, model: str = "gpt-4o-mini", *, base_url: str | None = None, api_key: str | None = None,
                    client: Any = None, **options: Any) -> LLMReader:
        """A reader on any OpenAI-compatible endpoint (``openai`` SDK); ``options`` are :class:`ReaderConfig` fields.

        Args:
            model: the model name the endpoint knows.
            base_url: the endpoint (None: api.openai.com).
            api_key: the key; default: the environment variable ``api_key_env`` (OPENAI_API_KEY). Never stored.
            client: an ``openai.OpenAI`` client to use as it is.
            **options: any other :class:`ReaderConfig` field (prices, budgets, timeouts, mode, ...).

        Raises:
            MissingExtraError: the ``openai`` package is not installed (``[openai]`` extra).
            ReaderError: no key and no base_url.
        """
        config = ReaderConfig(provider="openai", model=model, base_url=base_url, api_key=api_key, **options)
        return cls(OpenAIBackend(config, client), config)

    @classmethod
    def from_langchain(cls, chat_model: Any, **options: Any) -> LLMReader:
        """A reader on any LangChain ``BaseChatModel``; ``options`` are :class:`ReaderConfig` fields."""
        model = str(getattr(chat_model, "model_name", None) or getattr(chat_model, "model", None) or type(chat_model).__name__)
        config = ReaderConfig(provider="langchain", model=model, **options)
        return cls(LangChainBackend(chat_model, config), config)

    @classmethod
    def from_config(cls, config: ReaderConfig, chat_model: Any = None) -> LLMReader:
        if config.provider == "langchain":
            if chat_model is None:
                raise ReaderError("this cube's reader is a LangChain model: open it with reader=LLMReader.from_langchain(model)")
            return cls(LangChainBackend(chat_model, config), config)
        return cls(OpenAIBackend(config), config)

    @property
    def name(self) -> str:
        return f"{self.backend.name}:{self.backend.model}"

    # -- the two calls ---------------------------------------------------------------------------
    def extract(self, window: Sequence[WindowMessage], *, timeout: float | None = None) -> Extraction:
        """Candidates and forget requests from ``window``, with their provenance resolved to item ids."""
        labels = {f"m{n + 1}": m for n, m in enumerate(window)}
        lines = [(label, m.speaker, m.time.strftime("%Y-%m-%d %H:%M") if m.time else "", m.text) for label, m in labels.items()]
        data, usage = self._ask(prompts.EXTRACT_SYSTEM, prompts.window_prompt(lines), prompts.EXTRACT_SCHEMA, "memories", timeout)
        last_time = next((m.time for m in reversed(window) if m.time is not None), None)
        candidates: list[Candidate] = []
        refused: list[dict[str, Any]] = []
        limit = max(MIN_CANDIDATES, CANDIDATES_PER_MESSAGE * len(window))  # a runaway reply cannot flood the cube
        for raw in data.get("memories") or []:
            cand = self._candidate(raw, labels, last_time, len(candidates) + 1)
            if cand is not None:
                if len(candidates) >= limit:
                    refused.append({"why": f"dropped: more than {limit} memories for a window of {len(window)} message(s)"})
                    break
                candidates.append(cand)
        forget = [f for f in data.get("forget") or [] if isinstance(f, str) and f.strip()]
        if forget and not any(FORGET_WORDS.search(m.text) for m in window):
            forget = []  # the model may not invent a request to forget
        return Extraction(candidates, forget[:20], usage, refused)

    def reconcile(self, candidates: Sequence[Candidate], forget: Sequence[str], existing: Sequence[MemoryItem], *,
                  timeout: float | None = None) -> Reconciliation:
        """One decision per candidate (ADD when there is nothing to compare with: no LLM call)."""
        if not existing or (not candidates and not forget):
            return Reconciliation([Decision("ADD", c, None, "nothing similar known") for c in candidates], [], Usage())
        shown = {f"e{n + 1}": it for n, it in enumerate(existing)}
        new = [(c.label, f"[{c.kind.value}] {c.text}" + (f" (from {c.valid_from.date()})" if c.valid_from else "")
                + (f' <- "{c.quote}"' if c.quote else "")) for c in candidates]
        forgets = [(f"f{n + 1}", text) for n, text in enumerate(forget)]
        old = [(label, f"[{it.kind.value}] {_short(it.text, 200)}" + (f" (since {it.valid_from.date()})" if it.valid_from else ""))
               for label, it in shown.items()]
        data, usage = self._ask(prompts.RECONCILE_SYSTEM, prompts.reconcile_prompt(new, forgets, old),
                                prompts.RECONCILE_SCHEMA, "decisions", timeout)
        by_label = {c.label: c for c in candidates}
        forget_labels = {label for label, _ in forgets}
        decisions: list[Decision] = []
        refused: list[dict[str, Any]] = []
        decided: set[str] = set()
        targeted: set[str] = set()
        for raw in data.get("decisions") or []:
            if not isinstance(raw, Mapping):
                continue
            label, op = str(raw.get("id") or ""), str(raw.get("op") or "").upper()
            target = raw.get("target")
            reason = str(raw.get("reason") or "")[:300]
            why = None
            if op not in OPS:
                why = f"unknown op {op!r}"
            elif label not in by_label and label not in forget_labels:
                why = f"unknown candidate {label!r}"
            elif label in decided and op != "DELETE":
                why = f"a second decision for {label!r}"
            elif op in ("UPDATE", "SUPERSEDE", "DELETE", "NOOP") and target not in shown:
                why = f"unknown memory {target!r} (only the labels shown may be named)"
            elif op == "DELETE" and label not in forget_labels:
                why = "DELETE without an explicit request to forget"
            elif op in ("UPDATE", "SUPERSEDE", "DELETE") and target in targeted:
                why = f"{target!r} changed twice in one window"
            elif label in forget_labels and op != "DELETE":
                continue  # a forget request that found nothing to forget
            if why is not None:
                refused.append({"decision": dict(raw), "why": why})
                continue
            decided.add(label)
            real = shown[target].id if isinstance(target, str) and target in shown else None
            if op in ("UPDATE", "SUPERSEDE", "DELETE"):
                targeted.add(str(target))
            decisions.append(Decision(op, by_label.get(label), real, reason))
        for cand in candidates:  # nothing is lost: an undecided (or refused) candidate is added
            if cand.label not in decided:
                decisions.append(Decision("ADD", cand, None, "no valid decision from the model"))
        return Reconciliation(decisions, refused, usage)

    # -- the organiser's calls (memos_integrations.organize) -------------------------------------
    def summary(self, texts: Sequence[str], *, timeout: float | None = None) -> tuple[str, Usage]:
        """One summary of a cluster's or session's memories (one call) and what it cost.

        Raises:
            InvalidInputError: no text.
            ReaderError: the endpoint failed, or replied without a summary (``error.usage`` says what it cost).
        """
        shown = [_short(t, MAX_SUMMARY_CHARS) for t in texts if t.strip()][:MAX_SUMMARY_TEXTS]
        if not shown:
            raise InvalidInputError("summary needs at least one non-empty text")
        data, usage = self._ask(prompts.SUMMARIZE_SYSTEM, prompts.summary_prompt(shown), prompts.SUMMARY_SCHEMA,
                                "summary", timeout, kind=str)
        text = " ".join(str(data["summary"]).split())
        if not text:
            raise _spent(ReaderError(f"{self.name} replied with an empty summary; the organiser writes an extractive one"), usage)
        return text, usage

    def conflict(self, newer: MemoryItem, older: MemoryItem, *, timeout: float | None = None) -> tuple[bool, str, Usage]:
        """Whether ``newer`` supersedes ``older`` (one call): (supersede, the model's reason, usage).

        Raises:
            ReaderError: the endpoint failed, or the reply named no decision (``error.usage`` says what it cost).
        """
        def shown(it: MemoryItem) -> str:
            since = it.valid_from or it.event_time or it.created_at
            return f"[{it.kind.value}] {_short(it.text, 300)}" + (f" (since {since.date()})" if since else "")

        data, usage = self._ask(prompts.CONFLICT_SYSTEM, prompts.conflict_prompt(shown(newer), shown(older)),
                                prompts.CONFLICT_SCHEMA, "decision", timeout, kind=str)
        decision = str(data["decision"]).strip().upper()
        if decision not in ("SUPERSEDE", "KEEP_BOTH"):
            raise _spent(ReaderError(f"{self.name} answered {decision!r}, not SUPERSEDE or KEEP_BOTH; the conflict "
                                     "stays flagged"), usage)
        return decision == "SUPERSEDE", str(data.get("reason") or "")[:300], usage

    def lesson(self, tool: str, facts: str, calls: Sequence[str], *, timeout: float | None = None) -> tuple[str, Usage]:
        """A tool-memory lesson worded by the model (one call) from the extractive ``facts`` and a few ``calls``.

        Raises:
            ReaderError: the endpoint failed, or replied without a lesson (``error.usage`` says what it cost).
        """
        shown = [_short(c, 300) for c in calls][-MAX_LESSON_CALLS:]
        data, usage = self._ask(prompts.LESSON_SYSTEM, prompts.lesson_prompt(tool, _short(facts, 600), shown),
                                prompts.LESSON_SCHEMA, "lesson", timeout, kind=str)
        text = " ".join(str(data["lesson"]).split())
        if not text:
            raise _spent(ReaderError(f"{self.name} replied with an empty lesson; tool memory keeps the extractive one"), usage)
        return text, usage

    def tool_lesson_writer(self, cube: Any = None) -> Any:
        """A ``ToolMemory(writer=...)`` that words lessons with this reader
        (:class:`~memos_integrations.toolmem.writer.LessonWriter`); with ``cube``, counted in its ledger and budgets."""
        from ..toolmem.writer import LessonWriter

        return LessonWriter(self, cube)

    def summarize(self, texts: Sequence[str]) -> str:
        """The organiser's duck-typed summary call (no ledger: :meth:`for_cube` counts and budgets it)."""
        return self.summary(texts)[0]

    def resolve_conflict(self, newer: MemoryItem, older: MemoryItem) -> bool:
        """The organiser's duck-typed conflict call: True when ``newer`` supersedes ``older``."""
        return self.conflict(newer, older)[0]

    def for_cube(self, cube: Any, user_id: str | None) -> Any:
        """This reader's organiser calls for one user of ``cube``, counted in the cube's usage ledger and
        held to its budgets like window reads (:class:`~.organizing.CubeBoundReader`)."""
        from .organizing import CubeBoundReader

        return CubeBoundReader(self, cube.reader_engine.ledger, user_id)

    # -- helpers ---------------------------------------------------------------------------------
    def _ask(self, system: str, user: str, schema: dict[str, Any], key: str, timeout: float | None,
             kind: type = list) -> tuple[dict[str, Any], Usage]:
        """One call; a reply that is not the expected JSON gets one repair round, then a ReaderError."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        limit = timeout or self.config.timeout_s
        done = self.backend.complete(messages, schema, limit)
        usage = done.usage
        try:
            return parse_object(done.text, key, kind), usage
        except ReplyNotJSON as exc:
            messages += [{"role": "assistant", "content": done.text[:4000]},
                         {"role": "user", "content": prompts.REPAIR.format(error=str(exc)[:200])}]
        again = self.backend.complete(messages, schema, limit)
        usage = usage + again.usage
        try:
            return parse_object(again.text, key, kind), usage
        except ReplyNotJSON as exc:
            error = ReaderError(f"{self.name} twice replied without valid JSON ({exc}); try another model or "
                                "structured='json_schema'")
            raise _spent(error, usage) from exc

    def _candidate(self, raw: Any, labels: Mapping[str, WindowMessage], last_time: datetime | None, n: int) -> Candidate | None:
        if not isinstance(raw, Mapping):
            return None
        text = raw.get("text")
        if not isinstance(text, str) or not text.strip():
            return None
        try:
            kind = Kind(str(raw.get("type") or "fact").lower())
        except ValueError:
            kind = Kind.FACT
        if kind not in (Kind.FACT, Kind.PREFERENCE, Kind.EVENT):
            kind = Kind.FACT
        srcs = [labels[s] for s in raw.get("sources") or [] if isinstance(s, str) and s in labels]
        said_at = next((m.time for m in srcs if m.time is not None), last_time)
        event_time = _resolve_when(raw.get("when"), srcs, said_at) if kind == Kind.EVENT else None
        conf = raw.get("confidence")
        confidence = float(conf) if isinstance(conf, (int, float)) and not isinstance(conf, bool) and 0 <= conf <= 1 else 0.8
        pref = raw.get("preference")
        return Candidate(
            label=f"c{n}", kind=kind, text=text.strip()[:2000], sources=[m.id for m in srcs],
            message_ids=[m.message_id for m in srcs if m.message_id], valid_from=event_time or said_at,
            event_time=event_time, preference=pref if kind == Kind.PREFERENCE and pref in ("explicit", "implicit") else
            ("explicit" if kind == Kind.PREFERENCE else None), confidence=confidence,
            entities=[e[:MAX_NAME_CHARS] for e in _listed(raw.get("entities")) if isinstance(e, str)][:20],
            relations=[[str(x)[:MAX_NAME_CHARS] for x in r] for r in _listed(raw.get("relations"))
                       if isinstance(r, (list, tuple)) and len(r) == 3][:20],
            quote=_short(srcs[0].text, 80) if srcs else "",
        )


def _spent(error: ReaderError, usage: Usage) -> ReaderError:
    """``error`` carrying what the failed calls cost (``error.usage``): they were made and paid for."""
    error.usage = usage  # type: ignore[attr-defined]
    return error


def _listed(value: Any) -> list[Any]:
    """A list the model gave, or nothing (a string or an object in its place is not iterated)."""
    return value if isinstance(value, list) else []


def _short(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters (prompt tokens are paid per window)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _resolve_when(when: Any, sources: Sequence[WindowMessage], said_at: datetime | None) -> datetime | None:
    """An event's time: a date the model wrote, else a relative expression (its own or the source
    message's) resolved against the time the message was said, else that time."""
    if isinstance(when, str) and when.strip():
        try:
            return parse_timestamp(when)
        except (InvalidInputError, InvalidTypeError):  # not a date: read it as a relative expression below
            pass
        if said_at is not None:
            found = resolve_relative(when, said_at)
            if found:
                return datetime(found[0][1].year, found[0][1].month, found[0][1].day, tzinfo=said_at.tzinfo)
    if said_at is not None:
        for m in sources:
            found = resolve_relative(m.text, said_at)
            if found:
                return datetime(found[0][1].year, found[0][1].month, found[0][1].day, tzinfo=said_at.tzinfo)
    return said_at
