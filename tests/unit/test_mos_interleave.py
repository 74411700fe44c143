"""Three users interleave reads, writes, shares and unshares on MOS; no one ever reaches a cube they have no access
to at that moment, whether they go through MOS or through a cube view they were handed earlier.

The test keeps its own model of who may do what (owners fixed, shares changed by the steps) and checks every
outcome against it: an allowed call succeeds and touches only its cube, a refused one raises
``AccessDeniedError``, changes nothing and adds exactly one refusal to the cube's audit log.
"""

from __future__ import annotations

from itertools import count
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memos_integrations import MOS
from memos_integrations.access import allows
from memos_integrations.errors import AccessDeniedError, ItemNotFoundError

USERS = ("alice", "bob", "carol")
OWNERS = {"alice_c": "alice", "bob_c": "bob"}  # carol owns nothing
CUBES = tuple(OWNERS)
WORDS = ("tea", "ferns", "kayaks", "jazz", "rye", "otters")

steps = st.lists(
    st.tuples(
        # unshares weigh triple: what matters is access taken away under views already handed out
        st.sampled_from(("add", "search", "search_all", "get", "update", "delete", "view", "share") + ("unshare",) * 3),
        st.sampled_from(USERS),
        st.sampled_from(CUBES),
        st.sampled_from(("mos", "view", "view")),  # through MOS, or through a view handed out earlier
        st.sampled_from(("read", "write")),
        st.integers(0, 50),
    ),
    min_size=6,
    max_size=20,
)
_run = count()


@pytest.fixture(scope="module")
def mos(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    home: Path = tmp_path_factory.mktemp("interleave")
    m = MOS(home, embedder=embedder)
    for user in USERS:
        m.create_user(user)
    for cube_id, owner in OWNERS.items():
        m.create_cube_for_user(cube_id, owner_id=owner)
        m.add(memory_content=f"{owner} keeps a secret about {cube_id}.", mem_cube_id=cube_id, user_id=owner)
    yield m
    m.close()


def test_no_one_ever_reaches_a_cube_they_have_no_access_to(mos: Any) -> None:
    raw = {c: mos._cube(c) for c in CUBES}  # noqa: SLF001 - the test observes the cubes behind the checks

    def denials(cube_id: str) -> int:
        return sum(1 for e in raw[cube_id].audit_log(limit=100_000) if not e["allowed"])

    def observed(cube_id: str) -> list[tuple[str, str, int]]:
        return [(i.id, i.text, i.version) for i in raw[cube_id].get_all()]

    stale: list[bool] = []

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(steps)
    def check(sequence: list[tuple[Any, ...]]) -> None:
        run = next(_run)
        # every example starts with each cube shared for writing with everyone, and a view in every hand:
        # the steps then take access away (and give it back) under views already handed out
        shares: dict[tuple[str, str], str] = {}
        views: dict[tuple[str, str], Any] = {}
        for cube_id, owner in OWNERS.items():
            for user in USERS:
                if user != owner:
                    mos.share_cube_with_user(cube_id, user, "write", user_id=owner)
                    shares[(cube_id, user)] = "write"
                views[(cube_id, user)] = mos.cube(cube_id, user_id=user)

        def level(cube_id: str, user: str) -> str | None:
            return "owner" if OWNERS[cube_id] == user else shares.get((cube_id, user))

        for op, user, cube_id, via, access, n in sequence:
            target = [u for u in USERS if u != OWNERS[cube_id]][n % 2]
            if op in ("share", "unshare") and n % 3:
                user = OWNERS[cube_id]  # mostly the owner (who may), sometimes anyone (who may not)
            if (cube_id, user) not in views and level(cube_id, user) is not None:
                views[(cube_id, user)] = mos.cube(cube_id, user_id=user)  # handed out now, used from here on
            items = observed(cube_id)
            item_id = items[n % len(items)][0] if items else "no-such-memory"
            need = {"add": "write", "update": "write", "delete": "write", "share": "owner", "unshare": "owner"}.get(op, "read")
            allowed = allows(level(cube_id, user), need)
            view = views.get((cube_id, user)) if via == "view" else None
            stale.append(view is not None and not allowed and op in ("add", "search", "get", "update", "delete"))
            denied_before = denials(cube_id)
            others_before = {c: observed(c) for c in CUBES if c != cube_id}
            text = f"{user} says {WORDS[n % len(WORDS)]} (run {run})"

            if op == "search_all":
                found = _call(mos, views, op, user, cube_id, view, access, target, item_id, text)
                readable = {c for c in CUBES if level(c, user) is not None}
                assert {g["cube_id"] for g in found["text_mem"]} == readable
                for group in found["text_mem"]:
                    assert {h.item.cube_id for h in group["memories"]} <= {group["cube_id"]}
                continue
            before = observed(cube_id)
            if not allowed:
                with pytest.raises(AccessDeniedError):
                    _call(mos, views, op, user, cube_id, view, access, target, item_id, text)
                assert observed(cube_id) == before, f"{user} changed {cube_id} without access"
                assert denials(cube_id) == denied_before + 1, "every refusal is audited once"
            else:
                try:
                    result = _call(mos, views, op, user, cube_id, view, access, target, item_id, text)
                except ItemNotFoundError:
                    assert item_id == "no-such-memory"  # the cube is empty: allowed, and honestly not found
                    continue
                if op == "share":
                    shares[(cube_id, target)] = access
                elif op == "unshare":
                    shares.pop((cube_id, target), None)
                elif op == "search":
                    hits = result if isinstance(result, list) else result["text_mem"][0]["memories"]
                    assert {h.item.cube_id for h in hits} <= {cube_id}
                elif op == "get":
                    assert result.id == item_id and result.cube_id == cube_id
                elif op == "add":
                    assert observed(cube_id) != before and result[0].created_by == user
            assert {c: observed(c) for c in CUBES if c != cube_id} == others_before, "a call reached another cube"
            # what MOS says now is what the model says
            for c in CUBES:
                for u in USERS:
                    assert mos.access_of(c, u) == level(c, u)

    check()
    assert sum(stale) >= 10, "the steps should use views after their access was taken back"


def _call(mos: Any, views: dict[tuple[str, str], Any], op: str, user: str, cube_id: str, view: Any, access: str,
          target: str, item_id: str, text: str) -> Any:
    """One step, through MOS or through the view the user was handed earlier."""
    if op == "view":
        views[(cube_id, user)] = mos.cube(cube_id, user_id=user)
        return None
    if op == "share":
        return mos.share_cube_with_user(cube_id, target, access, user_id=user)
    if op == "unshare":
        return mos.unshare_cube(cube_id, target, user_id=user)
    if op == "search_all":  # MOS's own scope: only readable cubes are searched, nothing is refused
        return mos.search("secret", user_id=user, top_k=3)
    if view is not None:
        return {"add": lambda: view.add(memory=text), "search": lambda: view.search("secret", top_k=3),
                "get": lambda: view.get(item_id), "update": lambda: view.update(item_id, text=text),
                "delete": lambda: view.delete(item_id)}[op]()
    return {"add": lambda: mos.add(memory_content=text, mem_cube_id=cube_id, user_id=user),
            "search": lambda: mos.search("secret", user_id=user, install_cube_ids=[cube_id], top_k=3),
            "get": lambda: mos.get(cube_id, item_id, user_id=user),
            "update": lambda: mos.update(cube_id, item_id, user_id=user, text=text),
            "delete": lambda: mos.delete(cube_id, item_id, user_id=user)}[op]()
