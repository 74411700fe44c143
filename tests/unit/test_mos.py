"""MOS: users, cube registry, sharing and access control; every denial lands in the cube's audit log."""

from __future__ import annotations

from pathlib import Path

import pytest

from memos_integrations import MOS, MemCube
from memos_integrations.errors import (
    AccessDeniedError,
    CubeNotFoundError,
    InvalidInputError,
    ItemNotFoundError,
    MemosError,
    UnknownUserError,
)
from tests.unit.conftest import snapshot


@pytest.fixture
def mos(tmp_path: Path, embedder):  # type: ignore[no-untyped-def]
    m = MOS(tmp_path / "home", embedder=embedder)
    for user in ("alice", "bob", "carol"):
        m.create_user(user)
    yield m
    m.close()


@pytest.fixture
def alice_cube(mos) -> str:  # type: ignore[no-untyped-def]
    cube_id = mos.create_cube_for_user("alice_notes", owner_id="alice")
    mos.add(memory_content="Alice's favourite tea is genmaicha.", mem_cube_id=cube_id, user_id="alice")
    mos.add(messages=[{"role": "user", "content": "I am flying to Tokyo next month.", "id": "m1"}],
            mem_cube_id=cube_id, user_id="alice", session_id="s1", timestamp="8 May 2023")
    return cube_id


def _denials(mos, cube_id: str):  # type: ignore[no-untyped-def]
    return [e for e in mos.cube(cube_id, user_id=mos._owner(cube_id)).audit_log(limit=1000) if not e["allowed"]]


def test_users(mos) -> None:  # type: ignore[no-untyped-def]
    mos.create_user("dave", name="Dave D.", role="admin")
    assert {"user_id": "dave", "name": "Dave D.", "role": "admin"} in mos.list_users(user_id="alice")
    with pytest.raises(InvalidInputError):
        mos.create_user("  ")
    with pytest.raises(InvalidInputError):
        mos.create_user("eve", role="root")  # type: ignore[arg-type]


def test_owner_adds_searches_and_gets(mos, alice_cube: str) -> None:  # type: ignore[no-untyped-def]
    found = mos.search("What tea does Alice like?", user_id="alice")
    assert set(found) == {"text_mem", "act_mem", "para_mem"}
    assert [g["cube_id"] for g in found["text_mem"]] == [alice_cube]
    top = found["text_mem"][0]["memories"][0]
    assert top.item.text == "Alice's favourite tea is genmaicha." and top.item.created_by == "alice"
    assert found["act_mem"] == [] and found["para_mem"] == []
    assert mos.get(alice_cube, top.item.id, user_id="alice") == top.item
    everything = mos.get_all(alice_cube, user_id="alice")["text_mem"][0]["memories"]
    assert len(everything) == 2 and {m.user_id for m in everything} == {"alice"}
    assert mos.get_all(user_id="alice")["text_mem"][0]["cube_id"] == alice_cube
    assert mos.list_cubes("alice") == [{"cube_id": alice_cube, "access": "owner"}]


def test_update_and_delete_through_mos(mos, alice_cube: str) -> None:  # type: ignore[no-untyped-def]
    item = mos.get_all(alice_cube, user_id="alice")["text_mem"][0]["memories"][0]
    new = mos.update(alice_cube, item.id, user_id="alice", text="Alice's favourite tea is hojicha.")
    assert new.version == 2 and new.created_by == "alice"
    assert mos.delete(alice_cube, item.id, user_id="alice") == 1
    with pytest.raises(ItemNotFoundError):
        mos.get(alice_cube, item.id, user_id="alice")
    assert len(mos.cube(alice_cube, user_id="alice").history(item.id)) == 3


def test_unshared_cube_is_closed_and_each_denial_is_audited(mos, alice_cube: str) -> None:  # type: ignore[no-untyped-def]
    cube = mos.cube(alice_cube, user_id="alice")
    item = cube.get_all()[0]
    before = snapshot(cube)
    assert mos.search("tea", user_id="bob")["text_mem"] == []  # bob's search simply does not see it
    attempts = [
        ("search", lambda: mos.search("tea", user_id="bob", install_cube_ids=[alice_cube])),
        ("get", lambda: mos.get(alice_cube, item.id, user_id="bob")),
        ("get_all", lambda: mos.get_all(alice_cube, user_id="bob")),
        ("add", lambda: mos.add(memory_content="bob was here", mem_cube_id=alice_cube, user_id="bob")),
        ("update", lambda: mos.update(alice_cube, item.id, user_id="bob", text="hacked")),
        ("delete", lambda: mos.delete(alice_cube, item.id, user_id="bob")),
        ("open", lambda: mos.cube(alice_cube, user_id="bob")),
        ("share", lambda: mos.share_cube_with_user(alice_cube, "bob", "write", user_id="bob")),
    ]
    for _action, attempt in attempts:
        with pytest.raises(AccessDeniedError, match="ask its owner") as err:
            attempt()
        assert isinstance(err.value, PermissionError) and isinstance(err.value, MemosError)
    denials = _denials(mos, alice_cube)
    assert len(denials) == len(attempts)
    assert [d["action"] for d in reversed(denials)] == [a for a, _ in attempts]
    assert all(d["principal"] == "bob" and d["target"] == alice_cube for d in denials)
    assert snapshot(cube) == before  # and nothing changed


def test_read_share(mos, alice_cube: str) -> None:  # type: ignore[no-untyped-def]
    mos.share_cube_with_user(alice_cube, "bob", "read", user_id="alice")
    assert mos.list_cubes("bob") == [{"cube_id": alice_cube, "access": "read"}]
    hits = mos.search("flying to Tokyo", user_id="bob")["text_mem"][0]["memories"]
    assert "Tokyo" in hits[0].item.text
    item = hits[0].item
    assert mos.get(alice_cube, item.id, user_id="bob") == item
    cube = mos.cube(alice_cube, user_id="alice")
    before = snapshot(cube)
    for write in (
        lambda: mos.add(memory_content="bob was here", mem_cube_id=alice_cube, user_id="bob"),
        lambda: mos.update(alice_cube, item.id, user_id="bob", text="changed"),
        lambda: mos.delete(alice_cube, item.id, user_id="bob"),
        lambda: mos.cube(alice_cube, user_id="bob", access="write"),
    ):
        with pytest.raises(AccessDeniedError, match="needs write, has read"):
            write()
    assert snapshot(cube) == before
    denials = _denials(mos, alice_cube)
    assert len(denials) == 4 and all(d["detail"] == {"needed": "write", "had": "read"} for d in denials)
    # only the owner shares: a reader cannot pass the cube on
    with pytest.raises(AccessDeniedError, match="needs owner"):
        mos.share_cube_with_user(alice_cube, "carol", "read", user_id="bob")
    assert mos.list_cubes("carol") == []
    # and unsharing closes it again
    mos.unshare_cube(alice_cube, "bob", user_id="alice")
    assert mos.search("Tokyo", user_id="bob")["text_mem"] == []
    with pytest.raises(AccessDeniedError):
        mos.get(alice_cube, item.id, user_id="bob")


def test_write_share(mos, alice_cube: str) -> None:  # type: ignore[no-untyped-def]
    mos.share_cube_with_user(alice_cube, "bob", "write", user_id="alice")  # every call names who acts
    added = mos.add(memory_content="Bob will water Alice's plants.", mem_cube_id=alice_cube, user_id="bob")[0]
    assert added.user_id == "bob" and added.created_by == "bob"
    assert mos.update(alice_cube, added.id, user_id="bob", text="Bob waters the plants on Fridays.").version == 2
    assert mos.delete(alice_cube, added.id, user_id="bob") == 1
    with pytest.raises(AccessDeniedError, match="needs owner"):
        mos.share_cube_with_user(alice_cube, "carol", "read", user_id="bob")
    log = mos.cube(alice_cube, user_id="alice").audit_log()
    assert any(e["action"] == "share" and e["detail"] == {"with": "bob", "access": "write"} for e in log)


def test_admin_reaches_every_cube(mos, alice_cube: str) -> None:  # type: ignore[no-untyped-def]
    mos.create_user("root", role="admin")
    assert mos.access_of(alice_cube, "root") == "owner"
    assert len(mos.get_all(alice_cube, user_id="root")["text_mem"][0]["memories"]) == 2


def test_unknown_users_and_cubes(mos, alice_cube: str) -> None:  # type: ignore[no-untyped-def]
    cube = mos.cube(alice_cube, user_id="alice")
    before = snapshot(cube)
    for call in (
        lambda: mos.search("tea", user_id="mallory"),
        lambda: mos.add(memory_content="x", mem_cube_id=alice_cube, user_id="mallory"),
        lambda: mos.get_all(alice_cube, user_id="mallory"),
        lambda: mos.share_cube_with_user(alice_cube, "mallory", user_id="alice"),
        lambda: mos.create_cube_for_user("m", owner_id="mallory"),
        lambda: mos.list_cubes("mallory"),
    ):
        with pytest.raises(UnknownUserError, match="create_user"):
            call()
    assert issubclass(UnknownUserError, LookupError)
    assert snapshot(cube) == before
    with pytest.raises(CubeNotFoundError, match="register"):
        mos.search("tea", user_id="alice", install_cube_ids=["no_such_cube"])
    with pytest.raises(InvalidInputError, match="no user"):
        mos.search("tea")
    with pytest.raises(InvalidInputError, match="mem_cube_id"):
        mos.add(memory_content="which cube?", user_id="carol")  # carol owns none


def test_register_an_existing_cube_directory(mos, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    with MemCube.init_from_dir(tmp_path / "bobs", embedder=embedder) as c:
        c.add(memory="Bob keeps bees.", user_id="bob")
    cube_id = mos.register_mem_cube(tmp_path / "bobs", "bob", mem_cube_id="bees")
    assert mos.list_cubes("bob") == [{"cube_id": "bees", "access": "owner"}]
    assert "bees" in mos.search("What does Bob keep?", user_id="bob")["text_mem"][0]["memories"][0].item.text
    # another user cannot take it over by registering the same id
    with pytest.raises(AccessDeniedError):
        mos.register_mem_cube(tmp_path / "bobs", "carol", mem_cube_id=cube_id)
    with pytest.raises(CubeNotFoundError):
        mos.register_mem_cube(tmp_path / "nothing_here", "bob")


def test_a_reader_cannot_swap_the_cube_behind_a_registered_id(mos, alice_cube: str, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    mos.share_cube_with_user(alice_cube, "bob", "read", user_id="alice")
    with MemCube.init_from_dir(tmp_path / "decoy", embedder=embedder) as decoy:
        decoy.add(memory="Alice's favourite tea is whatever Bob says.")
    with pytest.raises(InvalidInputError, match="another directory"):
        mos.register_mem_cube(tmp_path / "decoy", "bob", mem_cube_id=alice_cube)
    # alice's writes and reads still go to her own cube
    hits = mos.search("favourite tea", user_id="alice")["text_mem"][0]["memories"]
    assert hits[0].item.text == "Alice's favourite tea is genmaicha."
    assert mos.cube(alice_cube, user_id="alice").path.resolve() == (mos.home / "cubes" / "alice_notes").resolve()


def test_mos_state_survives_a_new_mos_on_the_same_home(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    first = MOS(home, embedder=embedder)
    first.create_user("alice")
    first.create_user("bob")
    cube_id = first.create_cube_for_user("notes", owner_id="alice")
    first.add(memory_content="Alice's passport expires in 2027.", mem_cube_id=cube_id, user_id="alice")
    first.share_cube_with_user(cube_id, "bob", "read", user_id="alice")
    first.close()

    second = MOS(home, embedder=embedder)
    try:
        assert {u["user_id"] for u in second.list_users(user_id="bob")} == {"alice", "bob"}
        assert second.list_cubes("bob") == [{"cube_id": cube_id, "access": "read"}]
        hits = second.search("When does the passport expire?", user_id="bob")["text_mem"][0]["memories"]
        assert "2027" in hits[0].item.text
        with pytest.raises(AccessDeniedError):
            second.add(memory_content="x", mem_cube_id=cube_id, user_id="bob")
    finally:
        second.close()


def test_search_lists_activation_and_parametric_memory_by_cube(mos, alice_cube: str) -> None:  # type: ignore[no-untyped-def]
    cube = mos.cube(alice_cube, user_id="alice")
    (cube.path / "kv" / "thread-1").mkdir(parents=True)
    (cube.path / "adapters" / "alice-style").mkdir(parents=True)
    found = mos.search("tea", user_id="alice")
    assert found["act_mem"] == [{"cube_id": alice_cube, "memories": ["thread-1"]}]
    assert found["para_mem"] == [{"cube_id": alice_cube, "memories": ["alice-style"]}]


def test_a_users_own_mos_cannot_share_someone_elses_cube(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    with_admin = MOS(home, embedder=embedder)
    with_admin.create_user("alice")
    with_admin.create_user("bob")
    cube_id = with_admin.create_cube_for_user("alice_notes", owner_id="alice")
    with_admin.close()
    bobs = MOS(home, user_id="bob", embedder=embedder)  # bob's session: bob is the acting user
    try:
        with pytest.raises(AccessDeniedError, match="needs owner"):
            bobs.share_cube_with_user(cube_id, "bob", "write")
        with pytest.raises(AccessDeniedError):
            bobs.unshare_cube(cube_id, "alice")
        assert bobs.list_cubes() == []
    finally:
        bobs.close()
