"""MemScheduler: moves memories through their lifecycle (generated -> activated -> merged -> archived -> frozen).

- **promote**: a generated item that searches keep returning (``promote_hits``) becomes *activated*;
  activated items are the "hot" set a local model may prefill into its shared KV prefix.
- **merge**: near-duplicate live items of one user (cosine >= ``merge_threshold`` on the stored
  vectors) collapse into the newest one; the others become *merged*, with a ``merged_into`` edge and
  their sources added to the survivor's provenance. Nothing is deleted.
- **archive**: items untouched for ``archive_after_days`` become *archived*: kept, versioned, no
  longer searched by default.
- **freeze**: pinned items never move again (the scheduler skips *frozen*).
- **working**: each session's working memory is kept by the write path (an add enters it, what no
  longer fits is demoted right after: :mod:`memos_integrations.organize.partitions`); this job repairs
  what a crash between the two left (a session over its capacity, too many active sessions) and brings
  back items a search used since its last run.
- **organize**: partitions (working memory per session, profile, long-term: promotion and demotion),
  topic summaries, session episodes and relation links (:mod:`memos_integrations.organize`), as one
  incremental job that only redoes users whose memories changed (its progress record is kept per
  user, so a run killed half-way resumes; with nothing changed it is a no-op).

:meth:`MemScheduler.run` runs them all (``working`` and ``organize`` can be turned off in the policy)
and reports what each did. Every move is a new version and an audit entry, so ``history(id)`` shows
why an item changed.

Example:
    >>> import tempfile
    >>> from memos_integrations import MemCube
    >>> cube = MemCube.init_from_dir(tempfile.mkdtemp())
    >>> _ = cube.add(memory=["Maya's dog is a beagle called Pixel.", "Maya's dog is a beagle called Pixel!"], user_id="maya")
    >>> MemScheduler(cube).merge()["merged"]
    1
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .cube import MemCube
from .items import Edge, Kind, Lifecycle, MemoryItem, to_epoch, utcnow

#: the states the scheduler moves on its own (archived, merged and frozen items stay put)
_MOVABLE = (Lifecycle.GENERATED, Lifecycle.ACTIVATED)


class SchedulerPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    promote_hits: int = Field(3, ge=1, description="search hits after which a generated item is activated")
    archive_after_days: float = Field(90.0, gt=0, description="idle days after which a live item is archived")
    merge_threshold: float = Field(0.95, gt=0, le=1, description="cosine similarity that counts as a duplicate")
    max_merge_scan: int = Field(5000, ge=2, description="largest per-user set scanned for duplicates")
    working: bool = Field(True, description="run() repairs and refreshes sessions' working memory")
    organize: bool = Field(True, description="run() runs the incremental organiser (users with no change are skipped)")


class MemScheduler:
    """Applies a :class:`SchedulerPolicy` to one cube."""

    def __init__(self, cube: MemCube, policy: SchedulerPolicy | None = None, principal: str = "scheduler") -> None:
        self.cube = cube
        self.policy = policy or SchedulerPolicy()
        self.principal = principal

    def _move(self, items: Sequence[MemoryItem], state: Lifecycle, reason: str) -> int:
        for item in items:
            self.cube.update(item.id, state=state, principal=self.principal)
        if items:
            self.cube.audit(state.value, self.principal, self.cube.cube_id, {"reason": reason, "ids": [i.id for i in items]})
        return len(items)

    def promote(self) -> int:
        ids = self.cube.store.ids_used_at_least(Lifecycle.GENERATED, self.policy.promote_hits)
        items = self.cube.text_mem.get_many(ids)
        return self._move(items, Lifecycle.ACTIVATED, f"returned by search >= {self.policy.promote_hits} times")

    def archive(self) -> int:
        cutoff = to_epoch(utcnow() - timedelta(days=self.policy.archive_after_days))
        ids = self.cube.store.ids_idle_since(_MOVABLE, cutoff)  # type: ignore[arg-type]
        items = self.cube.text_mem.get_many(ids)
        return self._move(items, Lifecycle.ARCHIVED, f"idle for {self.policy.archive_after_days} days")

    def merge(self) -> dict[str, int]:
        merged = groups = 0
        for user in self.cube.store.user_ids(_MOVABLE):  # each user is a scope; items with no user form one too
            rids = self.cube.store.rids_of_user(user, _MOVABLE, self.policy.max_merge_scan)
            found, matrix = self.cube.store.vectors_for(rids)
            if len(found) < 2:
                continue
            items = self.cube.store.get_by_rid(found)
            sims = matrix @ matrix.T
            np.fill_diagonal(sims, -1.0)
            # newest first: the survivor of a duplicate group is the most recent statement
            order = sorted(range(len(found)), key=lambda i: -to_epoch(items[found[i]].updated_at))  # type: ignore[arg-type, operator]
            # summaries are the organiser's (rebuilt from their members): never merged, never merged into
            done: set[int] = {i for i in range(len(found)) if items[found[i]].kind == Kind.SUMMARY}
            for i in order:
                if i in done:
                    continue
                dupes = [int(j) for j in np.nonzero(sims[i] >= self.policy.merge_threshold)[0] if j not in done and j != i]
                if not dupes:
                    continue
                survivor = items[found[i]]
                losers = [items[found[j]] for j in dupes]
                done.update([i, *dupes])
                sources = list(dict.fromkeys([*survivor.sources, *(s for it in losers for s in it.sources), *(it.id for it in losers)]))
                self.cube.update(survivor.id, sources=sources, principal=self.principal)
                self.cube.graph.add_edges([Edge(it.id, survivor.id, "merged_into") for it in losers])
                merged += self._move(losers, Lifecycle.MERGED, f"duplicate of {survivor.id}")
                groups += 1
        return {"merged": merged, "groups": groups}

    def freeze(self, ids: Sequence[str]) -> int:
        return self._move(self.cube.text_mem.get_many(list(ids)), Lifecycle.FROZEN, "pinned")

    def organize(self, user_id: str | None = None, *, reader: Any = "auto", full: bool = False) -> dict[str, Any]:
        """The organising job (see :func:`memos_integrations.organize.organize`: by default with the cube's
        LLM reader, if it has one), with this scheduler's principal."""
        from .organize import organize

        return organize(self.cube, user_id, reader=reader, full=full, principal=self.principal).as_dict()

    def keep_working(self) -> dict[str, int]:
        """The working-memory job (:func:`memos_integrations.organize.partitions.sweep`): promoted, demoted,
        and how many users it settled."""
        from .organize.partitions import sweep

        return sweep(self.cube.store, self.cube.cube_id, self.principal)

    def hottest(self, user_id: str | None = None, n: int = 10) -> list[MemoryItem]:
        """The most-used live items (activated and frozen first): what a shared KV prefix should hold."""
        ids = self.cube.store.most_used(
            [Lifecycle.ACTIVATED, Lifecycle.FROZEN, Lifecycle.GENERATED], user_id, n, last=Lifecycle.GENERATED)
        return self.cube.text_mem.get_many(ids)

    def run(self) -> dict[str, Any]:
        """One pass: merge duplicates, promote the used, archive the idle, then (unless the policy turns
        them off) keep working memory (``report["working"]``) and organise the users whose memories
        changed (``report["organize"]``: an :class:`~memos_integrations.organize.OrganizeReport` as a
        dict, with the cube's LLM reader if it has one)."""
        report: dict[str, Any] = dict(self.merge())
        report["promoted"] = self.promote()
        report["archived"] = self.archive()
        if self.policy.working:
            report["working"] = self.keep_working()
        if self.policy.organize:
            report["organize"] = self.organize()
        return report
