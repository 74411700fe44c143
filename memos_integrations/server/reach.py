"""One refusal for a cube the caller cannot reach, shared by the REST routes (:meth:`.service.Service.guard`)
and the MCP tools (:mod:`.mcp`).

MOS checks access on the cube itself: ``MOS.cube(...)`` on another user's cube opens it (26 ms for a small
one not yet open, and its memory) and writes the refusal into that cube's audit log (65 against 16 us of CPU
per refusal), so a caller could tell by time which cube ids exist. :func:`guard` refuses a cube the caller
cannot reach before MOS touches it, from the registry alone, with the same registry reads and the same one
audit row whether the cube is another user's or does not exist. A cube the caller does reach is MOS's to
check as before (a write on a read share is an :class:`AccessDeniedError`, audited in the cube). Repeated
refusals are folded (:mod:`memos_integrations.audit_fold`): per user and minute the first 10 of a cube id and
30 in all are rows, the rest counts written when the minute is over, so probing costs no write per probe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..access import AuditSink
from ..audit_fold import fold_for, tick
from ..errors import AccessDeniedError, CubeNotFoundError

T = TypeVar("T")

#: the detail of the audit row a refusal writes (REST's in the key store's log, MCP's in MOS's)
UNREACHABLE = {"reason": "no cube this user can reach"}


def unreachable(cube_id: str) -> CubeNotFoundError:
    """The one error for "another user's cube" and "no such cube" (REST answers it as a 404)."""
    return CubeNotFoundError(f"no cube {cube_id!r} that you can reach; GET /v1/cubes lists yours")


def reach(mos: Any, cube_id: str, user: str) -> str | None:
    """``user``'s access to ``cube_id`` from the registry (None: none, or no such cube), with the same
    registry reads either way (owner, share, role), so the two cannot be told apart by time."""
    try:
        return mos.access_of(cube_id, user)  # type: ignore[no-any-return]
    except CubeNotFoundError:
        mos._registry.share_of(cube_id, user)  # what access_of reads after the owner of a cube that exists
        mos._role(user)
        return None


def guard(mos: Any, user: str, cube_id: str, call: Callable[[], T], *, audit: AuditSink) -> T:
    """Run a MOS call on ``cube_id``; a cube ``user`` cannot reach at all is "not found", never opened.

    Args:
        mos: the :class:`~memos_integrations.MOS` the call uses.
        user: the user the call acts as.
        cube_id: the cube the call names.
        call: the MOS call, run only when ``user`` reaches the cube.
        audit: where a refusal is written (``action="open"``, allowed False), the same row for both cases;
            repeats past :class:`~memos_integrations.audit_fold.AuditFold`'s budgets are counted instead.

    Returns:
        What ``call`` returns.

    Raises:
        CubeNotFoundError: the cube does not exist or ``user`` cannot reach it (one message for both), also
            when a share is revoked while ``call`` runs.
        AccessDeniedError: ``user`` reaches the cube with less access than ``call`` needs (audited by MOS).
    """
    if reach(mos, cube_id, user) is None:
        fold_for(audit).refuse("open", user, cube_id, UNREACHABLE)  # repeats past a budget: counted, not written
        raise unreachable(cube_id)
    tick(audit)  # a window's counts reach the log once it is over, also when the probing has stopped
    try:
        return call()
    except (AccessDeniedError, CubeNotFoundError) as exc:
        try:
            now = mos.access_of(cube_id, user)
        except CubeNotFoundError:
            now = None
        if now is None:  # unshared or deleted meanwhile: MOS audited it; answer as for any unreachable cube
            raise unreachable(cube_id) from None
        raise exc
