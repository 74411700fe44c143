"""Who is acting, and what they may do: one resolver, one decision, used by MOS, every face, the CLI.

Where it sits: between the public entry points and the cube. No face, no CLI command and no service
route decides access on its own; each asks this module, so the rules are written once.

Who is acting (:func:`resolve_scope`) comes from, in this order:

1. the object's explicit binding (``create_memory_tools(cube, "maya")``, ``MemOSRetriever(user_id=...)``);
2. the run's ``context`` (LangChain ``create_agent(..., context_schema=...)``, LangGraph
   ``graph.invoke(..., context=...)`` / ``Runtime.context``);
3. ``config["configurable"]``.

Ids are normalised once by :func:`normalize_id`: an ``int`` is the string of it, an empty or
whitespace-only id is refused. A run that names another user (or agent) than the object's binding is
refused with :class:`AccessDeniedError`, and the refusal is audited; so is a context that disagrees with
``configurable``. A source that says nothing never overrides one that does.

What they may do (:func:`allows`, :func:`check`): access levels are ranked ``read < write < owner``
(``admin`` acts as owner everywhere); a denial is audited and raised in one place, :func:`deny`.

Example:
    >>> resolve_scope(bound={"user_id": "maya"}, context={"user_id": "maya", "agent_id": "scout"}).as_dict()
    {'user_id': 'maya', 'agent_id': 'scout', 'session_id': None}
    >>> resolve_scope(config={"configurable": {"user_id": 7}}).user_id
    '7'
    >>> resolve_scope(bound={"user_id": "maya"}, context={"user_id": "bob"})
    Traceback (most recent call last):
    ...
    memos_integrations.errors.AccessDeniedError: this component is bound to user_id 'maya' and cannot act for another; create one bound to that user_id instead
    >>> allows("write", "read"), allows("read", "write"), allows("owner", "write")
    (True, False, True)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import AccessDeniedError, InvalidInputError, InvalidTypeError

Level = Literal["read", "write", "owner"]
#: One rank table for every access decision in the package.
RANK: dict[str | None, int] = {None: 0, "read": 1, "write": 2, "owner": 3, "admin": 3}

#: Scope fields resolved from bindings, contexts and configurable, and the aliases each may go by.
SCOPE_FIELDS: dict[str, tuple[str, ...]] = {
    "user_id": ("user_id",),
    "agent_id": ("agent_id",),
    "session_id": ("session_id", "thread_id"),
}

#: An audit sink: ``(action, principal, target, detail, allowed)``; ``MemCube.audit`` has this shape.
AuditSink = Callable[..., Any]


def normalize_id(value: Any, what: str = "user_id") -> str | None:
    """One id, normalised: ``None`` stays ``None``, an int becomes its string, anything empty is refused.

    >>> normalize_id(42), normalize_id(" maya "), normalize_id(None)
    ('42', 'maya', None)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidTypeError(f"{what} must be a string or an integer, got a bool")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise InvalidTypeError(f"{what} must be a string or an integer, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise InvalidInputError(f"{what} must not be empty; pass a non-empty {what} or leave it out")
    if len(value) > 512:
        raise InvalidInputError(f"{what} is {len(value)} characters long; ids are at most 512")
    if any(ord(ch) < 32 for ch in value):
        raise InvalidInputError(f"{what} holds a control character; use printable ids")
    return value


@dataclass(frozen=True)
class Scope:
    """Who is acting: a user, optionally an agent and a session (a thread)."""

    user_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None

    @property
    def thread_id(self) -> str | None:
        return self.session_id

    @property
    def principal(self) -> str | None:
        """The name written to the audit log: the agent when one acts, else the user."""
        return f"agent:{self.agent_id}" if self.agent_id else self.user_id

    def as_dict(self) -> dict[str, str | None]:
        return {"user_id": self.user_id, "agent_id": self.agent_id, "session_id": self.session_id}

    def require_user(self, what: str = "this call") -> str:
        if self.user_id is None:
            raise InvalidInputError(
                f"{what} needs a user: bind one (user_id=...), or pass it in the run's context "
                "(context={'user_id': ...}) or config={'configurable': {'user_id': ...}}"
            )
        return self.user_id


def _value(source: Any, key: str) -> Any:
    """``key`` from a mapping, a dataclass or pydantic object, or None."""
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)


def _read(source: Any, field: str) -> str | None:
    for alias in SCOPE_FIELDS[field]:
        got = normalize_id(_value(source, alias), alias)
        if got is not None:
            return got
    return None


def run_context(config: Mapping[str, Any] | None = None) -> Any:
    """The run's ``context`` object, where the framework has one, else None.

    LangGraph keeps the ``Runtime`` (whose ``.context`` is what ``invoke(..., context=...)`` passed) in
    the run config; LangChain's ``create_agent`` runs on LangGraph, so its ``context`` is the same one.
    Outside a run, or when LangGraph was never imported, there is none.
    """
    configurable = (config or {}).get("configurable") or {}
    runtime = configurable.get("__pregel_runtime")
    if runtime is None and "langgraph.runtime" in sys.modules:  # importing langgraph here would break the light core
        try:
            runtime = sys.modules["langgraph.runtime"].get_runtime()
        except Exception:  # noqa: BLE001 - get_runtime raises a bare RuntimeError outside a run: no context then
            runtime = None
    return getattr(runtime, "context", None) if runtime is not None else None


def resolve_scope(
    *,
    bound: Mapping[str, Any] | None = None,
    context: Any = None,
    config: Mapping[str, Any] | None = None,
    audit: AuditSink | None = None,
    what: str = "this component",
    fields: tuple[str, ...] = ("user_id", "agent_id", "session_id"),
) -> Scope:
    """Resolve who is acting: the binding, then the run's context, then ``configurable``.

    Args:
        bound: the object's own binding (``{"user_id": ..., "agent_id": ..., "session_id": ...}``).
        context: the run's context (a mapping, dataclass or pydantic object); when None, it is read
            from ``config`` (see :func:`run_context`).
        config: the run config; its ``configurable`` is the last source.
        audit: where a refused binding is written (``MemCube.audit``).
        what: how the refusing component is named in the error.
        fields: which scope fields a disagreement is refused for (a thread may differ from a binding's
            default session in some faces; they pass ``("user_id", "agent_id")``).

    Returns:
        The :class:`Scope`; any field no source names is None.

    Raises:
        AccessDeniedError: the run names another user or agent than the binding, or the run's context
            and ``configurable`` disagree.
        InvalidInputError / InvalidTypeError: an id is empty or of a type ids cannot have.
    """
    if context is None:
        context = run_context(config)
    configurable = (config or {}).get("configurable") or {}
    out: dict[str, str | None] = {}
    for field in SCOPE_FIELDS:
        mine = _read(bound, field)
        from_context = _read(context, field)
        from_config = _read(configurable, field)
        if field in fields:
            run_value = from_context if from_context is not None else from_config
            if from_context is not None and from_config is not None and from_context != from_config:
                _refuse(audit, what, field, mine, {"context": from_context, "configurable": from_config},
                        f"the run's context and config['configurable'] name different {field}s; pass one")
            if mine is not None and run_value is not None and run_value != mine:
                _refuse(audit, what, field, mine, {"asked": run_value},
                        f"{what} is bound to {field} {mine!r} and cannot act for another; "
                        f"create one bound to that {field} instead")
        out[field] = next((v for v in (mine, from_context, from_config) if v is not None), None)
    return Scope(**out)


def _refuse(audit: AuditSink | None, what: str, field: str, mine: str | None, detail: dict[str, Any], message: str) -> None:
    if audit is not None:
        # the audit keeps both ids for the owner; the error text names only the caller's own binding
        audit("scope", mine, what, {"field": field, **detail}, allowed=False)
    raise AccessDeniedError(message)


def allows(have: str | None, need: str) -> bool:
    """Whether access level ``have`` covers ``need`` (``read < write < owner``; admin is owner)."""
    return RANK.get(have, 0) >= RANK[need]


def deny(audit: AuditSink | None, action: str, principal: str | None, target: str | None, message: str,
         detail: Mapping[str, Any] | None = None) -> AccessDeniedError:
    """Audit a denial and return the error to raise (``raise deny(...)``): every denial goes through here."""
    if audit is not None:
        audit(action, principal, target, dict(detail or {}), allowed=False)
    return AccessDeniedError(message)


def check(have: str | None, need: str, *, audit: AuditSink | None, action: str, principal: str | None,
          target: str | None, message: str) -> None:
    """Raise (audited) :class:`AccessDeniedError` unless ``have`` covers ``need``."""
    if not allows(have, need):
        raise deny(audit, action, principal, target, message, {"needed": need, "had": have})
