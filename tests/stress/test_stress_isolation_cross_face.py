"""Cross-face isolation (tests/unit/test_isolation_cross_face.py) on 200 new random sequences per run
instead of the suite's 25 fixed ones: the same model of what each user wrote, compared with the whole
cube after every step. ~2 minutes on a quiet machine (4.5 on a busy one)."""

from __future__ import annotations

from typing import Any

from tests.unit.test_isolation_cross_face import cross_face_run, fresh, query_vector  # noqa: F401


def test_users_never_reach_each_other_through_any_face_random(fresh: Any, query_vector: list[float]) -> None:  # noqa: F811
    cross_face_run(fresh, query_vector, max_examples=200, derandomize=False)
