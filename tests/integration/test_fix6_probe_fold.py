"""Probing cube ids writes a bounded number of audit rows that still count every probe (memos_integrations/audit_fold,
used by server/reach.guard for REST's Service.guard and the MCP tools).

Before the fix each refused probe was one audit row, one write transaction on mos.db: 200 probes were 200 rows
(a key probing at 50 requests a second: 4.3 million rows a day). Now, per user and window, the first refusals
of each cube id are rows and the rest are counts written when the window is over (or the store closes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from langchain_core.embeddings.fake import DeterministicFakeEmbedding  # noqa: E402

from memos_integrations.audit_fold import AuditFold, fold_for  # noqa: E402
from memos_integrations.errors import CubeNotFoundError  # noqa: E402
from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore  # noqa: E402
from memos_integrations.server.reach import guard  # noqa: E402

IDS = ["alice-c", "nope-1", "nope-2", "nope-3", "nope-4"]  # another user's cube and four that do not exist


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    with MOS(home, embedder=DeterministicFakeEmbedding(size=6)) as setup:
        setup.create_user("root", role="admin")
        for user in ("alice", "bob", "carol"):
            setup.create_user(user)
            setup.create_cube_for_user(f"{user}-c", owner_id=user)
    yield home


def _probe(mos: MOS, sink: Any, user: str, ids: list[str], n: int) -> list[str]:
    answers = []
    for k in range(n):
        cube = ids[k % len(ids)]
        with pytest.raises(CubeNotFoundError) as refused:
            guard(mos, user, cube, lambda: None, audit=sink)
        answers.append(str(refused.value).replace(cube, "<cube>"))
    return answers


def _accounted(rows: list[dict[str, Any]]) -> Counter[tuple[str | None, str | None]]:
    """Refusals per (user, cube id) the log accounts for: one per row, plus each count row's count."""
    out: Counter[tuple[str | None, str | None]] = Counter()
    for e in rows:
        out[(e["principal"], e["target"])] += e["detail"].get("suppressed", 1 if e["action"] == "open" else 0)
        out[(e["principal"], None)] += e["detail"].get("suppressed_other_ids", 0)
    return +out


def test_200_probes_of_5_ids_write_a_bounded_number_of_rows_that_count_all_200(home: Path) -> None:
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))
    keys = KeyStore.open(home / "mos.db")  # REST's sink: the key store's audit log in mos.db
    answers = _probe(mos, keys.audit, "bob", IDS, 200) + _probe(mos, keys.audit, "carol", IDS[:1], 7)
    assert set(answers) == {"no cube '<cube>' that you can reach; GET /v1/cubes lists yours"}  # one answer for all
    before_close = [e for e in keys.audit_log(1000) if e["action"].startswith("open")]
    assert len(before_close) == min(5 * AuditFold.ROWS_PER_CUBE, AuditFold.ROWS_PER_USER) + 7  # the rest: counted
    mos.close()
    keys.close()  # the counts of the open window reach the log
    keys = KeyStore.open(home / "mos.db")
    rows = [e for e in keys.audit_log(1000) if e["action"].startswith("open")]
    keys.close()
    assert len(rows) == len(before_close) + 5  # and one count row per probed id
    assert all(not e["allowed"] for e in rows)
    assert _accounted(rows) == {**{("bob", c): 40 for c in IDS}, ("carol", "alice-c"): 7}  # every probe, every prober
    # another user's cube and one that does not exist: the same rows
    assert ([(e["action"], e["detail"]) for e in rows if e["target"] == "alice-c" and e["principal"] == "bob"]
            == [(e["action"], e["detail"]) for e in rows if e["target"] == "nope-1"])


def test_an_enumeration_of_many_ids_is_bounded_per_user_and_the_window_end_writes_the_counts(home: Path) -> None:
    """MCP's sink (MOS's own log); many distinct ids: at most ROWS_PER_USER rows, the rest one count per user."""
    mos = MOS(home, embedder=DeterministicFakeEmbedding(size=6))
    fold = fold_for(mos._audit)
    clock = [0]  # the window is the fold's clock, held still while probing: a real 0.2 s window
    fold._now = lambda: clock[0]  # type: ignore[method-assign]  # could end mid-probe on a busy CI machine
    fold._window = 0
    try:
        _probe(mos, mos._audit, "bob", [f"id-{n}" for n in range(100)], 100)
        written = [e for e in mos.audit_log(user_id="root", limit=1000) if e["action"].startswith("open")]
        assert len(written) == AuditFold.ROWS_PER_USER
        clock[0] = 1  # the window is over
        with pytest.raises(CubeNotFoundError):  # any guarded call after the window: the counts are written
            guard(mos, "carol", "bob-c", lambda: None, audit=mos._audit)
        rows = [e for e in mos.audit_log(user_id="root", limit=1000) if e["action"].startswith("open")]
        assert _accounted(rows)[("bob", None)] == 100 - AuditFold.ROWS_PER_USER
        assert sum(_accounted(rows).values()) == 101  # bob's 100 and carol's one
        assert len(rows) == AuditFold.ROWS_PER_USER + 2
    finally:
        mos.close()


def test_a_fold_does_not_keep_its_store_alive(home: Path) -> None:
    import gc
    import weakref

    keys = KeyStore.open(home / "mos.db")
    fold_for(keys.audit)
    gone = weakref.ref(keys)
    keys.db.close()
    del keys
    gc.collect()
    assert gone() is None
