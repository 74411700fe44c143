"""Where a long session's parts are cut (organize/episodes.py ``session_parts``), on fixed ids: a session of
at most ``episode_size`` is one part (every LoCoMo session: recall unchanged); a longer one is covered by
parts of 1..``episode_size`` in order, cut by content, so one deleted or inserted memory changes at most 3
parts (mostly 1) wherever it sits, and appending changes only the last part or starts a new one."""

from __future__ import annotations

import hashlib
import statistics
import uuid
from random import Random

import pytest

from memos_integrations.organize import OrganizePolicy
from memos_integrations.organize.episodes import cut_spacing, episode_id, session_parts


def uuids(n: int, seed: int = 7) -> list[str]:
    rnd = Random(seed)
    return [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(n)]


def groups(ids: list[str], size: int) -> list[tuple[str, ...]]:
    return [tuple(ids[lo:hi]) for lo, hi in session_parts(ids, size)]


def changed(old: list[str], new: list[str], size: int) -> int:
    """Parts of ``new`` not among ``old``'s: the episodes an organising pass writes."""
    before = set(groups(old, size))
    return sum(1 for g in groups(new, size) if g not in before)


def test_a_session_of_at_most_episode_size_is_one_part_with_the_sessions_own_id() -> None:
    """LoCoMo dev's longest session is 43 turns: under the default episode_size every session is one
    episode with the id it always had, so LoCoMo recall cannot change."""
    assert OrganizePolicy().episode_size >= 43
    for size in (2, 10, 43, 100):
        for n in (1, size // 2, size):
            assert session_parts(uuids(n), size) == [(0, n)]
    assert episode_id("u", "s1") == "episode-" + hashlib.sha1(b"'u'\x00s1").hexdigest()[:24]
    assert episode_id("u", "s1", "m-7") != episode_id("u", "s1", "m-8") != episode_id("u", "s1")


@pytest.mark.parametrize("size", [2, 3, 4, 7, 10, 37, 100])
def test_parts_cover_the_session_in_order_each_at_most_episode_size(size: int) -> None:
    m, _ = cut_spacing(size)
    for n in (size + 1, 2 * size + 3, 700):
        ids = uuids(n, seed=n + size)
        parts = session_parts(ids, size)
        assert [lo for lo, _ in parts] == [0] + [hi for _, hi in parts[:-1]] and parts[-1][1] == n
        assert all(1 <= hi - lo <= size for lo, hi in parts)
        assert parts[0][1] >= min(m, n)  # the first part is no sliver
        assert session_parts(ids, size) == parts  # deterministic


@pytest.mark.parametrize("size", [10, 100])
def test_one_deleted_or_inserted_memory_changes_at_most_three_parts(size: int) -> None:
    ids = uuids(600)
    parts = session_parts(ids, size)
    deleted = [changed(ids, ids[:k] + ids[k + 1 :], size) for k in range(len(ids))]
    inserted = [changed(ids, ids[:k] + [f"moved-in-{k}"] + ids[k:], size) for k in range(0, len(ids), 3)]
    assert max(deleted) <= 3 and max(inserted) <= 3
    assert deleted.count(1) >= 0.8 * len(deleted) and inserted.count(1) >= 0.5 * len(inserted)
    for k in range(0, len(ids), 5):  # the parts before the edit are untouched
        new = set(groups(ids[:k] + ids[k + 1 :], size))
        assert all(tuple(ids[lo:hi]) in new for lo, hi in parts if hi <= k)
    # fixed offsets (before): deleting the 6th memory changed every part but none
    assert changed(ids, ids[:5] + ids[6:], size) <= 3 < len(parts) - 1


@pytest.mark.parametrize("size", [10, 100])
def test_appending_changes_only_the_last_part_or_starts_a_new_one(size: int) -> None:
    ids = uuids(4 * size)
    for n in range(size + 1, 4 * size):
        old, new = groups(ids[:n], size), groups(ids[: n + 1], size)
        assert new[:-1] == old[:-1] or new[:-1] == old
        assert changed(ids[:n], ids[: n + 1], size) == 1


@pytest.mark.parametrize("size", [10, 100])
def test_parts_hold_about_half_of_episode_size_on_average(size: int) -> None:
    lengths = [hi - lo for lo, hi in session_parts(uuids(5000), size)]
    assert 0.35 * size <= statistics.mean(lengths) <= 0.75 * size and max(lengths) <= size
