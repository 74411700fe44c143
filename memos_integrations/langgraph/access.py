"""Who may read and write which store namespaces, and who is acting in a run.

Where it sits: governance for :class:`MemOSStore`. The rules live in the cube (``kv`` rows of collection
``lg_acl``), so they persist with the memories they protect; every denial goes through
:func:`memos_integrations.access.deny` (audited in the cube, then raised).

Who is acting (:func:`run_principal`): inside a LangGraph run (a node, a tool, a subgraph, LangMem's tools),
the run's ``context=`` and ``config["configurable"]`` name the user (``user_id``) and the agent
(``agent_id``), resolved by :func:`memos_integrations.access.resolve_scope`. ``MemOSStore.batch`` reads
them itself, so LangGraph's injected store, ``get_store()``, ``InjectedStore`` and subgraphs (which always
get the parent's store) are checked without a hand-carried ``as_principal`` wrapper. Outside a run, and in
a run that names nobody, the store acts for its owner (the application), unchecked, unless the policy is
``strict``.

Rules, for a namespace ``ns`` and a principal:

- ``ns[0]`` in ``private_roots`` (default ``agents`` -> agent_id, ``users`` -> user_id): ``ns[1]`` owns it
  (``("agents", "scout", ...)`` belongs to the agent ``scout``, ``("users", "alice", ...)`` to the user
  ``alice``; a user named ``scout`` owns nothing under ``agents``); others need a grant.
- ``ns[0]`` in ``shared_roots`` (default ``teams``): only grants (``read`` or ``write``) open it.
- any other root (LangMem's ``("memories", ...)`` for one) is open to every principal; with
  ``strict=True`` it is closed like a shared root, and a run that names no user or agent is refused.

Grants go to a name: an agent id or an ``as_principal`` name (``"scout"``), or a user as ``"user:<id>"``.
A grant on a prefix covers everything under it. Checks happen for every op of a batch before any op runs,
so a denied batch writes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.store.base import BaseStore, GetOp, Op, PutOp, Result, SearchOp

from ..access import RANK, allows, deny, resolve_scope
from ..aio import in_thread
from ..errors import InvalidInputError
from ..face_api import CubeAPI, as_cube
from . import store_logic as L

Access = Literal["read", "write"]
Role = Literal["agent_id", "user_id", "any"]
_ACL = "lg_acl"
#: the default private roots and whose id owns the label after them
PRIVATE_ROOTS: dict[str, Role] = {"agents": "agent_id", "users": "user_id"}


@dataclass(frozen=True)
class Principal:
    """Who a store operation acts for: a name bound in code (``as_principal``) and the run's agent and user."""

    name: str | None = None
    agent_id: str | None = None
    user_id: str | None = None

    def owns(self, role: Role, label: str) -> bool:
        """Whether this principal owns a private namespace whose owner label is ``label``.

        A bound name (``as_principal``) is an agent's name: it owns agent namespaces, never a user's.
        """
        return ((role in ("agent_id", "any") and label in (self.name, self.agent_id))
                or (role in ("user_id", "any") and self.user_id == label))

    def grant_keys(self) -> list[str]:
        """The names grants are looked up under; an agent or bound name spelled ``user:<id>`` is not that user."""
        keys = [k for k in (self.name, self.agent_id) if k and not k.startswith("user:")]
        return keys + ([f"user:{self.user_id}"] if self.user_id else [])

    @property
    def audit_name(self) -> str:
        """The name written to the audit log (and into memories' ``created_by``)."""
        if self.name:
            return self.name
        if self.agent_id:
            return f"agent:{self.agent_id}"
        return f"user:{self.user_id}"


def _as_principal(principal: str | Principal) -> Principal:
    return principal if isinstance(principal, Principal) else Principal(name=principal)


def current_config() -> RunnableConfig | None:
    """The config of the LangGraph / LangChain run this call is part of, or None outside a run."""
    from langgraph.config import get_config

    try:
        return get_config()
    except RuntimeError:  # get_config's way of saying "not inside a runnable"
        return None


def run_principal(audit: Any = None, *, bound: str | None = None, what: str = "MemOSStore") -> Principal | None:
    """The principal of the current run (binding > run context > configurable), or None when none is named.

    Raises:
        AccessDeniedError: the run names another agent than ``bound``, or its context and configurable
            disagree (audited).
    """
    config = current_config()
    if config is None and bound is None:
        return None
    scope = resolve_scope(bound={"agent_id": bound} if bound else None, config=config, audit=audit, what=what,
                          fields=("user_id", "agent_id"))
    if bound is None and scope.user_id is None and scope.agent_id is None:
        return None
    return Principal(name=bound, agent_id=None if bound else scope.agent_id, user_id=scope.user_id)


class NamespacePolicy:
    """Access rules for store namespaces, kept in the cube.

    Example:
        >>> import tempfile
        >>> from memos_integrations import MemCube
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> policy = NamespacePolicy(cube)
        >>> policy.grant(("teams", "research"), "writer", "read")
        >>> policy.access("writer", ("teams", "research", "notes")), policy.access("writer", ("agents", "scout"))
        ('read', None)
        >>> policy.access("scout", ("agents", "scout", "notes")), policy.access("scout", ("memories", "x"))
        ('owner', 'write')
        >>> NamespacePolicy(cube, strict=True).access("scout", ("memories", "x")) is None
        True
        >>> cube.close()
    """

    def __init__(self, cube: Any, *, private_roots: Mapping[str, Role] | Sequence[str] = PRIVATE_ROOTS,
                 shared_roots: Sequence[str] = ("teams",), strict: bool = False) -> None:
        """Args:
            cube: where the grants are kept and denials audited.
            private_roots: root -> the id that owns the label after it (``"agent_id"``, ``"user_id"`` or
                ``"any"``); a plain sequence of roots means ``"any"`` for each.
            shared_roots: roots opened only by grants.
            strict: close every other root too (only grants open it), and refuse runs that name nobody.
        """
        self.cube: CubeAPI = as_cube(cube, "NamespacePolicy")
        self.private_roots: dict[str, Role] = (
            dict(private_roots) if isinstance(private_roots, Mapping) else {r: "any" for r in private_roots})
        bad = {r: v for r, v in self.private_roots.items() if v not in ("agent_id", "user_id", "any")}
        if bad:
            raise InvalidInputError(f"private_roots map a root to 'agent_id', 'user_id' or 'any', got {bad}")
        self.shared_roots, self.strict = tuple(shared_roots), bool(strict)

    def grant(self, prefix: tuple[str, ...], principal: str, access: Access) -> None:
        """Give ``principal`` (an agent id, an ``as_principal`` name, or ``"user:<id>"``) access under ``prefix``."""
        if access not in ("read", "write"):
            raise InvalidInputError(f"access is 'read' or 'write', got {access!r}")
        if self._remote_grant(prefix, principal, access):
            return
        key = L.encode(L.check_labels(prefix, for_write=True))
        with self.cube.store.db.transaction() as tx:  # read-modify-write of one rule set: lock it
            tx.lock(f"{_ACL}:{key}")
            rules = self.cube.store.kv_get(_ACL, [key]).get(key, {})
            rules[principal] = access
            self.cube.store.kv_put(_ACL, {key: rules})
            self.cube.audit("grant", None, f"ns:{key}", {"principal": principal, "access": access})

    def revoke(self, prefix: tuple[str, ...], principal: str) -> None:
        """Take back what :meth:`grant` gave ``principal`` under ``prefix``."""
        if self._remote_grant(prefix, principal, None):
            return
        key = L.encode(prefix)
        with self.cube.store.db.transaction() as tx:
            tx.lock(f"{_ACL}:{key}")
            rules = self.cube.store.kv_get(_ACL, [key]).get(key, {})
            rules.pop(principal, None)
            self.cube.store.kv_put(_ACL, {key: rules})
            self.cube.audit("revoke", None, f"ns:{key}", {"principal": principal})

    def _remote_grant(self, prefix: tuple[str, ...], principal: str, access: Access | None) -> bool:
        """On a RemoteCube the rules live on the service: send the grant there (the cube owner's only)."""
        from ..remote_store import RemoteStoreOps, remote_of

        remote = remote_of(self.cube)
        if remote is None:
            return False
        RemoteStoreOps(remote, index=None, plan="balanced", kind="fact").grant(prefix, principal, access)
        return True

    def access(self, principal: str | Principal, namespace: tuple[str, ...]) -> str | None:
        """'owner', 'write', 'read' or None for ``principal`` on ``namespace``."""
        if not namespace:
            return None
        who = _as_principal(principal)
        root = namespace[0]
        role = self.private_roots.get(root)
        if role is not None and len(namespace) > 1 and who.owns(role, namespace[1]):
            return "owner"
        if role is None and root not in self.shared_roots and not self.strict:
            return "write"
        keys = [L.encode(namespace[:n]) for n in range(1, len(namespace) + 1)]
        names = who.grant_keys()
        best: str | None = None
        for rules in self.cube.store.kv_get(_ACL, keys).values():
            for name in names:
                got = rules.get(name)
                if RANK.get(got, 0) > RANK.get(best, 0):
                    best = got
        return best

    def check(self, principal: str | Principal, namespace: tuple[str, ...], need: Access) -> None:
        """Raise (audited) ``AccessDeniedError`` unless ``principal`` has ``need`` on ``namespace``."""
        who = _as_principal(principal)
        have = self.access(who, namespace)
        if not allows(have, need):
            raise deny(
                self.cube.audit, f"store_{need}", who.audit_name, f"ns:{L.encode(namespace)}",
                f"{who.name or who.audit_name!r} may not {need} namespace {namespace} (has {have or 'no access'}); "
                "ask its owner for a grant: NamespacePolicy.grant(prefix, principal, 'read' | 'write')",
                {"needed": need, "had": have, "user_id": who.user_id, "agent_id": who.agent_id},
            )

    def check_scope(self, principal: str | Principal, namespace: tuple[str, ...], scope: Mapping[str, str]) -> None:
        """Refuse (audited) a write whose memories would be filed under a user or agent not the principal's.

        A put's index items carry the ``user_id`` / ``agent_id`` the store's ``scope`` reads from the
        namespace (``("memories", "users", "alice")`` -> alice), and every face recalls a user's memories
        by that id. Each id must be the principal's own, or the owner label of a private root the policy
        has just checked (grants included); an agent id is also fine under a user id that passes.
        """
        who = _as_principal(principal)
        root_role = self.private_roots.get(namespace[0]) if len(namespace) > 1 else None

        def vouched(field: Role, label: str | None) -> bool:
            return label is None or who.owns(field, label) or (root_role in (field, "any") and namespace[1] == label)

        user, agent = scope.get("user_id"), scope.get("agent_id")
        for field, label, ok in (("user_id", user, vouched("user_id", user)),
                                 ("agent_id", agent, vouched("agent_id", agent) or (user is not None and vouched("user_id", user)))):
            if not ok:
                raise deny(
                    self.cube.audit, "store_write", who.audit_name, f"ns:{L.encode(namespace)}",
                    f"{who.name or who.audit_name!r} may not write namespace {namespace}: its memories would be "
                    f"filed under another {field}; write under your own (('users', <your user_id>, ...)) "
                    "or ask for a grant on that user's or agent's private namespace",
                    {"needed": "write", field: label, "user_id": who.user_id, "agent_id": who.agent_id},
                )

    def may_read_under(self, principal: str | Principal, prefix: tuple[str, ...]) -> bool:
        """Whether anything under ``prefix`` could be readable (a search there is not pointless)."""
        who = _as_principal(principal)
        if not prefix or allows(self.access(who, prefix), "read"):
            return True
        if prefix[0] in self.private_roots and len(prefix) == 1:
            return True  # own namespace, or grants, may lie below
        pre = L.encode(prefix) + "."
        names = set(who.grant_keys())
        return any(k.startswith(pre) and names & set(rules) for k, rules in self.cube.store.kv_all(_ACL).items())

    def check_ops(self, principal: Principal, ops: Iterable[Op]) -> None:
        """Check every op of a batch (before any runs: a denied batch writes nothing)."""
        for op in ops:
            if isinstance(op, PutOp):
                self.check(principal, L.check_labels(op.namespace, for_write=True), "write")
            elif isinstance(op, GetOp):
                self.check(principal, L.check_labels(op.namespace), "read")
            elif isinstance(op, SearchOp) and not self.may_read_under(principal, op.namespace_prefix):
                self.check(principal, op.namespace_prefix, "read")

    def readable(self, principal: Principal) -> L.Readable:
        """A per-batch, cached ``namespace -> may read`` test for filtering searches and listings."""
        @functools.lru_cache(maxsize=4096)
        def ok(namespace: tuple[str, ...]) -> bool:
            return allows(self.access(principal, namespace), "read")

        return ok

    def refuse_anonymous_run(self) -> None:
        """In strict mode a store op inside a run that names no user or agent is refused (audited)."""
        raise deny(self.cube.audit, "store_access", None, "ns:*",
                   "this store's policy is strict: a run must say who is acting; pass context={'user_id': ...} "
                   "or config={'configurable': {'user_id': ..., 'agent_id': ...}}")


class ScopedStore(BaseStore):
    """A ``BaseStore`` view of a :class:`MemOSStore` acting as one named principal, checked by its policy.

    The run's user (from ``context=`` or ``configurable``) acts along with the name; a run that names
    another ``agent_id`` is refused (a binding is never overridden by the run).

    Example:
        >>> import tempfile
        >>> from memos_integrations import MemCube
        >>> from memos_integrations.langgraph import MemOSStore, NamespacePolicy
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> store = MemOSStore(cube, policy=NamespacePolicy(cube))
        >>> scout, writer = store.as_principal("scout"), store.as_principal("writer")
        >>> scout.put(("agents", "scout", "notes"), "n1", {"text": "draft idea"})
        >>> writer.get(("agents", "scout", "notes"), "n1")
        Traceback (most recent call last):
        ...
        memos_integrations.errors.AccessDeniedError: 'writer' may not read namespace ('agents', 'scout', 'notes') (has no access); ask its owner for a grant: NamespacePolicy.grant(prefix, principal, 'read' | 'write')
        >>> cube.close()
    """

    supports_ttl: bool = True

    def __init__(self, store: Any, principal: str) -> None:
        if not isinstance(principal, str) or not principal.strip():
            raise InvalidInputError(f"a principal is a non-empty string, got {principal!r}")
        self.store, self.principal, self.policy = store, principal.strip(), store.policy
        self.ttl_config = store.ttl_config

    def acting(self) -> Principal:
        got = run_principal(self.store.cube.audit, bound=self.principal, what=f"as_principal({self.principal!r})")
        assert got is not None  # a bound name always yields a principal
        return got

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self.store.run_as(list(ops), self.acting())  # type: ignore[no-any-return]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await in_thread(self.batch, list(ops))

    def put_with_provenance(self, namespace: tuple[str, ...], key: str, value: Any, *, sources: Sequence[str],
                            principal: str | None = None, index: Any = None, ttl: float | None = None) -> None:
        """``MemOSStore.put_with_provenance`` as this principal (``principal`` is ignored: the binding acts)."""
        self.store.put_as(self.acting(), namespace, key, value, sources=sources, index=index, ttl=ttl)
