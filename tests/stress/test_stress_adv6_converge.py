"""Adversary, session 6: the caches a search reads (decoded rows retired on commit, held candidates and speaker /
event-time maps, the vector cache, deferred index writes and their overlay) converge.

Two cube objects on one folder (two connections) rewrite, move, re-time, supersede (some ``valid_to`` a few
seconds ahead) and delete memories from two threads while three threads search both with every plan. Once the
writers stop and the short validities have passed, each cube object, caches warm, must answer every question
exactly as a cube opened afresh does: same memories, same text, same score. Run once with the exact path and
once on the ANN path with one object deferring its index writes. MEMOS_STRESS_SECONDS sets the writers' time
(a tenth of it per run, at least 10 s).
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.errors import ItemNotFoundError
from memos_integrations.textual import index_defer as D

SECONDS = max(10.0, float(os.environ.get("MEMOS_STRESS_SECONDS", "240")) / 10)
NAMES = ["Caroline", "Melanie", "Jon", "Gina"]
TOPICS = ["pottery", "camping", "adoption", "painting", "a dance studio", "running", "guitar", "Lisbon", "bees", "stamps"]
QUERIES = ["When did Caroline go camping?", "What did Melanie paint?", "Who went to Lisbon?", "What happened in May 2023?",
           "Where has Jon camped?", "What does Gina do?", "pottery", "What kinds of things did Caroline do?"]
PLANS = ["balanced", "learned", "deep", "multihop", "fast"]
USERS = ["u1", "u2"]


def _write(cube: MemCube, ids: list[str], seed: int, stop: float, errors: list[str]) -> None:
    rnd = random.Random(seed)
    while time.time() < stop:
        i, op = rnd.choice(ids), rnd.random()
        try:
            if op < 0.3:
                cube.update(i, text=f"I went to {rnd.choice(TOPICS)} with {rnd.choice(NAMES)} (edit {rnd.random():.3f}).")
            elif op < 0.5:
                day = datetime(2023, 5, 1, tzinfo=timezone.utc) + timedelta(days=rnd.randint(0, 60))
                cube.update(i, event_time=day.isoformat())
            elif op < 0.6:
                cube.update(i, metadata={"speaker": rnd.choice(NAMES)})
            elif op < 0.7:
                cube.update(i, user_id=rnd.choice(USERS))
            elif op < 0.8:
                cube.update(i, valid_to=datetime.now(timezone.utc) + timedelta(seconds=rnd.uniform(-5, 3)))
            elif op < 0.85:
                cube.delete([i])
            else:
                cube.add(memory=f"a note about {rnd.choice(TOPICS)} {rnd.random():.4f}", user_id=rnd.choice(USERS))
        except ItemNotFoundError:
            pass  # deleted by the other writer meanwhile
        except Exception as exc:  # noqa: BLE001 - collected: the test fails on any
            errors.append(f"write: {exc!r}"[:300])


def _search(cube: MemCube, seed: int, stop: float, errors: list[str]) -> None:
    rnd = random.Random(seed)
    while time.time() < stop:
        try:
            cube.search(rnd.choice(QUERIES), user_id=rnd.choice(USERS), top_k=8, plan=rnd.choice(PLANS))
        except Exception as exc:  # noqa: BLE001 - collected: the test fails on any
            errors.append(f"search: {exc!r}"[:300])


def _answers(cube: MemCube) -> dict[tuple[str, str, str], list[tuple[str, str, float]]]:
    return {(q, p, u): [(h.item.id, h.item.text, round(h.score, 3)) for h in cube.search(q, user_id=u, top_k=8, plan=p)]
            for q in QUERIES for p in PLANS for u in USERS}


@pytest.mark.parametrize("ann", [False, True], ids=["exact", "ann-deferred"])
def test_caches_converge_on_what_a_fresh_cube_answers(tmp_path: Path, embedder: Any, ann: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(6)
    a = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    ids: list[str] = []
    for s in range(6):
        turns = [{"role": "user", "name": rnd.choice(NAMES),
                  "content": f"I went to {rnd.choice(TOPICS)} with {rnd.choice(NAMES)} on day {s}-{k}."} for k in range(15)]
        ids += [it.id for it in a.add(messages=turns, user_id=rnd.choice(USERS), session_id=f"s{s}",
                                      timestamp=f"{s + 1} May, 2023")]
    b = MemCube.open(tmp_path / "c", embedder=embedder)
    try:
        if ann:
            monkeypatch.setattr(D, "MAX_AGE", 2.0)
            monkeypatch.setattr(D, "DRAIN_AT", 50)
            D.defer_writes(a.text_mem)
            a.text_mem.exact_search_max = b.text_mem.exact_search_max = 0
        stop, errors = time.time() + SECONDS, list[str]()
        threads = [threading.Thread(target=_write, args=(a, ids, 1, stop, errors)),
                   threading.Thread(target=_write, args=(b, ids, 2, stop, errors)),
                   *(threading.Thread(target=_search, args=(c, n, stop, errors)) for n, c in ((3, a), (4, b), (5, a)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:5]
        time.sleep(3.5)  # every valid_to written "a few seconds ahead" has passed: those memories ended
        with MemCube.open(tmp_path / "c", embedder=embedder) as fresh:
            fresh.text_mem.exact_search_max = a.text_mem.exact_search_max
            expected = _answers(fresh)
        for name, cube in (("first", a), ("second", b)):
            got = _answers(cube)
            wrong = [k for k in expected if got[k] != expected[k]]
            assert not wrong, f"{name} cube object: {len(wrong)} answers differ, e.g. {wrong[0]}: {got[wrong[0]][:3]} " \
                              f"against {expected[wrong[0]][:3]}"
    finally:
        b.close()
        a.close()
