"""Who may read and write which store namespaces: private agent/user namespaces and shared team ones.

Where it sits: governance for :class:`MemOSStore` in multi-agent graphs. The rules live in the cube
(``kv`` rows of collection ``lg_acl``), so they persist with the memories they protect, and every
denial is written to the cube's audit log.

Rules, for a namespace ``ns`` and a principal ``p``:

- ``ns[0]`` in ``private_roots`` (default ``agents``, ``users``): ``ns[1]`` owns it; others need a grant.
- ``ns[0]`` in ``shared_roots`` (default ``teams``): only grants (``read`` or ``write``) open it.
- any other root is open to every principal.

A grant on a prefix covers everything under it. Checks happen for every op of a batch before any op
runs, so a denied batch writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from langgraph.store.base import BaseStore, GetOp, ListNamespacesOp, Op, PutOp, Result, SearchOp

from ..errors import AccessDeniedError, InvalidInputError
from . import store_logic as L

Access = Literal["read", "write"]
_RANK = {None: 0, "read": 1, "write": 2, "owner": 3}
_ACL = "lg_acl"


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
        >>> policy.access("scout", ("agents", "scout", "notes"))
        'owner'
        >>> cube.close()
    """

    def __init__(self, cube: Any, *, private_roots: Sequence[str] = ("agents", "users"),
                 shared_roots: Sequence[str] = ("teams",)) -> None:
        self.cube = cube
        self.private_roots, self.shared_roots = tuple(private_roots), tuple(shared_roots)

    def grant(self, prefix: tuple[str, ...], principal: str, access: Access) -> None:
        if access not in ("read", "write"):
            raise InvalidInputError(f"access is 'read' or 'write', got {access!r}")
        key = L.encode(L.check_labels(prefix, for_write=True))
        with self.cube.store.transaction():
            rules = self.cube.store.kv_get(_ACL, [key]).get(key, {})
            rules[principal] = access
            self.cube.store.kv_put(_ACL, {key: rules})
            self.cube.audit("grant", None, f"ns:{key}", {"principal": principal, "access": access})

    def revoke(self, prefix: tuple[str, ...], principal: str) -> None:
        key = L.encode(prefix)
        with self.cube.store.transaction():
            rules = self.cube.store.kv_get(_ACL, [key]).get(key, {})
            rules.pop(principal, None)
            self.cube.store.kv_put(_ACL, {key: rules})
            self.cube.audit("revoke", None, f"ns:{key}", {"principal": principal})

    def access(self, principal: str, namespace: tuple[str, ...]) -> str | None:
        """'owner', 'write', 'read' or None for ``principal`` on ``namespace``."""
        if not namespace:
            return None
        root = namespace[0]
        if root not in self.private_roots and root not in self.shared_roots:
            return "write"
        if root in self.private_roots and len(namespace) > 1 and namespace[1] == principal:
            return "owner"
        keys = [L.encode(namespace[:n]) for n in range(1, len(namespace) + 1)]
        best: str | None = None
        for rules in self.cube.store.kv_get(_ACL, keys).values():
            got = rules.get(principal)
            if _RANK[got] > _RANK[best]:
                best = got
        return best

    def check(self, principal: str, namespace: tuple[str, ...], need: Access) -> None:
        have = self.access(principal, namespace)
        if _RANK[have] < _RANK[need]:
            self.cube.audit(f"store_{need}", principal, f"ns:{L.encode(namespace)}", {"had": have}, allowed=False)
            raise AccessDeniedError(
                f"{principal!r} may not {need} namespace {namespace} (has {have or 'no access'}); "
                "ask its owner for a grant: NamespacePolicy.grant(prefix, principal, 'read' | 'write')"
            )

    def may_read_under(self, principal: str, prefix: tuple[str, ...]) -> bool:
        """Whether anything under ``prefix`` could be readable (a search there is not pointless)."""
        if self.access(principal, prefix) is not None or not prefix:
            return True
        if prefix[0] in self.private_roots and len(prefix) == 1:
            return True  # own namespace, or grants, may lie below
        pre = L.encode(prefix) + "."
        return any(k.startswith(pre) and principal in rules for k, rules in self.cube.store.kv_all(_ACL).items())


class ScopedStore(BaseStore):
    """A ``BaseStore`` view of a :class:`MemOSStore` acting as one principal, checked by its policy.

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
        if store.policy is None:
            raise InvalidInputError("as_principal needs a store with a policy: MemOSStore(cube, policy=NamespacePolicy(cube))")
        if not isinstance(principal, str) or not principal:
            raise InvalidInputError(f"a principal is a non-empty string, got {principal!r}")
        self.store, self.principal, self.policy = store, principal, store.policy
        self.ttl_config = store.ttl_config

    def check(self, ops: Sequence[Op]) -> None:
        for op in ops:
            if isinstance(op, PutOp):
                self.policy.check(self.principal, L.check_labels(op.namespace, for_write=True), "write")
            elif isinstance(op, GetOp):
                self.policy.check(self.principal, L.check_labels(op.namespace), "read")
            elif isinstance(op, SearchOp) and not self.policy.may_read_under(self.principal, op.namespace_prefix):
                self.policy.check(self.principal, op.namespace_prefix, "read")

    def readable(self, namespace: tuple[str, ...]) -> bool:
        return _RANK[self.policy.access(self.principal, namespace)] >= _RANK["read"]

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        self.check(ops)  # all ops before any runs: a denied batch writes nothing
        needs_filter = any(isinstance(op, (SearchOp, ListNamespacesOp)) for op in ops)
        return self.store.run(ops, principal=self.principal, readable=self.readable if needs_filter else None)  # type: ignore[no-any-return]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    def put_with_provenance(self, namespace: tuple[str, ...], key: str, value: Any, *, sources: Sequence[str],
                            principal: str | None = None, index: Any = None, ttl: float | None = None) -> None:
        self.policy.check(self.principal, L.check_labels(namespace, for_write=True), "write")
        self.store.put_with_provenance(namespace, key, value, sources=sources, principal=self.principal, index=index, ttl=ttl)
