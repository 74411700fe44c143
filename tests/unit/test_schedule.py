"""MemScheduler: lifecycle moves are per user scope, versioned, audited, and never lose a memory."""

from memos_integrations.items import Lifecycle
from memos_integrations.schedule import MemScheduler, SchedulerPolicy

DUP = ["Maya's dog is a beagle called Pixel.", "Maya's dog is a beagle called Pixel!"]


def test_merge_collapses_duplicates_within_a_user_scope_only(cube):
    alice = cube.add(memory=DUP, user_id="alice")
    bob = cube.add(memory=DUP[:1], user_id="bob")                  # same text, other user: not a duplicate
    nobody = cube.add(memory=DUP, user_id=None)                     # no user: a scope of its own
    report = MemScheduler(cube).merge()
    assert report == {"merged": 2, "groups": 2}
    states = {i.id: cube.history(i.id)[-1].state for i in [*alice, *bob, *nobody]}
    assert states[bob[0].id] == Lifecycle.GENERATED
    for pair in (alice, nobody):
        merged = [i for i in pair if states[i.id] == Lifecycle.MERGED]
        survivor = [i for i in pair if states[i.id] != Lifecycle.MERGED]
        assert len(merged) == 1 and len(survivor) == 1
        assert merged[0].id in cube.get(survivor[0].id).sources          # provenance kept on the survivor
        assert [e.type for e in cube.graph.edges([merged[0].id], "out")] == ["merged_into"]
    assert any(e["action"] == "merged" for e in cube.audit_log())


def test_promote_and_archive(cube):
    used, idle = cube.add(memory=["Maya runs three mornings a week.", "The bakery opens at seven."], user_id="u")
    scheduler = MemScheduler(cube, SchedulerPolicy(promote_hits=2, archive_after_days=30))
    for _ in range(2):
        cube.search("how often does Maya run", user_id="u", top_k=1)
    assert scheduler.promote() == 1 and cube.get(used.id).state == Lifecycle.ACTIVATED
    cube.store.flush_usage()
    with cube.store.transaction() as c:                             # make `idle` untouched for a year
        c.execute("UPDATE items SET updated_at = updated_at - 365 * 86400, last_access = NULL WHERE id = ?", (idle.id,))
    assert scheduler.archive() == 1
    assert cube.history(idle.id)[-1].state == Lifecycle.ARCHIVED and cube.get(used.id).state == Lifecycle.ACTIVATED
    assert [h.item.id for h in cube.search("bakery", user_id="u")] == [used.id]   # archived: kept, not searched
