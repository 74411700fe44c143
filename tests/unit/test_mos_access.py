"""MOS access control without holes: a cube is its directory, every call names who acts, only an admin manages
others, a handed-out cube view loses access the moment it is revoked, and every refusal is audited."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MOS, MemCube
from memos_integrations.errors import AccessDeniedError, InvalidInputError, UnknownUserError
from memos_integrations.face_api import as_cube
from memos_integrations.mos_view import CubeView
from tests.unit.conftest import snapshot


@pytest.fixture
def mos(tmp_path: Path, embedder: Any) -> Any:
    m = MOS(tmp_path / "home", embedder=embedder)
    for user in ("alice", "bob", "carol"):
        m.create_user(user)
    yield m
    m.close()


@pytest.fixture
def alice_cube(mos: Any) -> str:
    cube_id: str = mos.create_cube_for_user("alice_notes", owner_id="alice")
    mos.add(memory_content="Alice's bank PIN hint is her cat's birthday.", mem_cube_id=cube_id, user_id="alice")
    return cube_id


def _raw(mos: Any, cube_id: str) -> MemCube:
    return mos._cube(cube_id)  # noqa: SLF001 - the test inspects the cube behind the access checks


def _denials(mos: Any, cube_id: str) -> list[dict[str, Any]]:
    return [e for e in _raw(mos, cube_id).audit_log(limit=1000) if not e["allowed"]]


# -- 1. a cube is its directory ---------------------------------------------------------------------------
def test_another_user_cannot_register_a_cube_directory_under_a_new_id(mos: Any, alice_cube: str) -> None:
    path = _raw(mos, alice_cube).path
    before = snapshot(_raw(mos, alice_cube))
    with pytest.raises(AccessDeniedError, match="already registered"):
        mos.register_mem_cube(path, user_id="bob", mem_cube_id="bobs_view")
    with pytest.raises(AccessDeniedError):  # a MemCube object over the same directory is the same cube
        with MemCube.open(path, embedder=mos.embedder) as again:
            mos.register_mem_cube(again, user_id="bob", mem_cube_id="bobs_view2")
    assert mos.list_cubes("bob") == []
    assert snapshot(_raw(mos, alice_cube)) == before
    denials = _denials(mos, alice_cube)
    assert [d["action"] for d in denials] == ["register", "register"]
    assert all(d["principal"] == "bob" and d["target"] == alice_cube for d in denials)


def test_a_symlink_to_a_registered_cube_is_the_same_cube(mos: Any, alice_cube: str, tmp_path: Path) -> None:
    link = tmp_path / "innocent_looking"
    os.symlink(_raw(mos, alice_cube).path, link)
    with pytest.raises(AccessDeniedError):
        mos.register_mem_cube(link, user_id="bob", mem_cube_id="bobs_view")
    with pytest.raises(AccessDeniedError):
        mos.create_cube_for_user("bobs_view", owner_id="bob", cube_path=link)
    assert mos.list_cubes("bob") == []


def test_the_owner_gets_a_clear_error_naming_the_existing_id(mos: Any, alice_cube: str) -> None:
    path = _raw(mos, alice_cube).path
    with pytest.raises(InvalidInputError, match=f"already registered as {alice_cube!r}"):
        mos.register_mem_cube(path, user_id="alice", mem_cube_id="second_name")
    with pytest.raises(InvalidInputError, match=f"already registered as {alice_cube!r}"):
        mos.create_cube_for_user("second_name", owner_id="alice", cube_path=path)
    # registering it again under its own id stays a harmless no-op
    assert mos.register_mem_cube(path, user_id="alice", mem_cube_id=alice_cube) == alice_cube
    assert mos.register_mem_cube(path, user_id="alice") == alice_cube
    assert mos.list_cubes("alice") == [{"cube_id": alice_cube, "access": "owner"}]


def test_create_cube_for_user_cannot_reach_a_registered_directory(mos: Any, alice_cube: str) -> None:
    path = _raw(mos, alice_cube).path
    for name in ("x/../alice_notes", "../cubes/alice_notes", "a\\b", "..", ".", "", "bad\x00name", " padded "):
        with pytest.raises(InvalidInputError):
            mos.create_cube_for_user(name, owner_id="bob")
    with pytest.raises(AccessDeniedError):
        mos.create_cube_for_user("bobs_view", owner_id="bob", cube_path=path)
    with pytest.raises(AccessDeniedError):  # inside her cube's directory is hers too
        mos.create_cube_for_user("bobs_view", owner_id="bob", cube_path=path / "kv" / "nested")
    with pytest.raises(AccessDeniedError):  # and the id she registered is hers
        mos.create_cube_for_user("alice_notes", owner_id="bob")
    assert not (path / "kv" / "nested").exists()
    assert mos.list_cubes("bob") == []
    assert [d["principal"] for d in _denials(mos, alice_cube)] == ["bob"] * 3


def test_register_validates_explicit_ids(mos: Any, tmp_path: Path, embedder: Any) -> None:
    MemCube.init_from_dir(tmp_path / "c", embedder=embedder).close()
    for bad in ("a/b", "..", "", "x\x00"):
        with pytest.raises(InvalidInputError):
            mos.register_mem_cube(tmp_path / "c", user_id="bob", mem_cube_id=bad)
    assert mos.register_mem_cube(tmp_path / "c", user_id="bob", mem_cube_id="c1") == "c1"


# -- 2. user management needs an admin, and every call names an actor --------------------------------------
def test_nobody_promotes_themselves_or_changes_another_user(mos: Any) -> None:
    mos.create_user("root", role="admin")  # bootstrap: the first admin needs no actor
    for call in (
        lambda: mos.create_user("bob", role="admin"),  # self-promotion with no actor
        lambda: mos.create_user("bob", role="admin", acting_user="bob"),
        lambda: mos.create_user("mallory", role="admin"),  # a new admin once one exists
        lambda: mos.create_user("mallory", role="admin", acting_user="bob"),
        lambda: mos.create_user("alice", name="Alice (hacked)"),  # renaming another user
        lambda: mos.create_user("alice", name="Alice (hacked)", acting_user="bob"),
        lambda: mos.create_user("root", role="user", acting_user="bob"),  # demoting the admin
        lambda: mos.create_user("root", role="user"),
    ):
        with pytest.raises(AccessDeniedError, match="admin"):
            call()
    users = {u["user_id"]: u for u in mos.list_users(user_id="alice")}
    assert users["bob"]["role"] == "user" and users["root"]["role"] == "admin" and "mallory" not in users
    assert users["alice"]["name"] == "alice"
    log = mos.audit_log(user_id="root", limit=100)
    denied = [e for e in log if not e["allowed"]]
    assert len(denied) == 8 and {e["action"] for e in denied} <= {"create_user", "update_user"}
    assert {e["target"] for e in denied} == {"bob", "mallory", "alice", "root"}


def test_admins_manage_users_and_users_rename_themselves(mos: Any) -> None:
    mos.create_user("root", role="admin")
    mos.create_user("bob", role="admin", acting_user="root")
    mos.create_user("alice", name="Alice A.", acting_user="alice")  # a user may rename themselves
    mos.create_user("carol", name="Carol C.", acting_user="root")
    mos.create_user("bob", role="user", acting_user="root")
    mos.create_user("dave")  # sign-up: a new plain user needs no actor
    mos.create_user("alice")  # naming an existing user again changes nothing and needs nothing
    users = {u["user_id"]: (u["name"], u["role"]) for u in mos.list_users(user_id="alice")}
    assert users == {"alice": ("Alice A.", "user"), "bob": ("bob", "user"), "carol": ("Carol C.", "user"),
                     "dave": ("dave", "user"), "root": ("root", "admin")}
    with pytest.raises(UnknownUserError):
        mos.create_user("erin", role="admin", acting_user="nobody")
    with pytest.raises(InvalidInputError, match="no user"):  # listing users names who asks, too
        mos.list_users()


def test_the_mos_default_user_is_the_actor(tmp_path: Path, embedder: Any) -> None:
    home = tmp_path / "home"
    setup = MOS(home, embedder=embedder)
    setup.create_user("root", role="admin")
    setup.create_user("bob")
    setup.close()
    with MOS(home, user_id="bob", embedder=embedder) as bobs, pytest.raises(AccessDeniedError):
        bobs.create_user("bob", role="admin")
    with MOS(home, user_id="root", embedder=embedder) as roots:
        roots.create_user("bob", role="admin")
        assert {u["user_id"]: u["role"] for u in roots.list_users()}["bob"] == "admin"


def test_sharing_never_falls_back_to_acting_as_the_owner(mos: Any, alice_cube: str) -> None:
    with pytest.raises(InvalidInputError, match="no user"):
        mos.share_cube_with_user(alice_cube, "bob", "write")
    with pytest.raises(InvalidInputError, match="no user"):
        mos.unshare_cube(alice_cube, "bob")
    assert mos.list_cubes("bob") == []
    mos.share_cube_with_user(alice_cube, "bob", "read", user_id="alice")
    assert mos.list_cubes("bob") == [{"cube_id": alice_cube, "access": "read"}]


def test_only_an_admin_reads_the_mos_audit_log(mos: Any) -> None:
    mos.create_user("root", role="admin")
    with pytest.raises(AccessDeniedError, match="admin"):
        mos.audit_log(user_id="bob")
    with pytest.raises(InvalidInputError, match="no user"):
        mos.audit_log()
    log = mos.audit_log(user_id="root")
    assert log[0]["action"] == "audit_log" and log[0]["principal"] == "bob" and not log[0]["allowed"]
    assert any(e["action"] == "create_user" and e["target"] == "root" and e["allowed"] for e in log)


def test_integer_user_ids_are_normalised(mos: Any) -> None:
    mos.create_user(7)
    cube_id = mos.create_cube_for_user("sevens", owner_id=7)
    assert mos.list_cubes("7") == [{"cube_id": cube_id, "access": "owner"}]
    assert mos.access_of(cube_id, 7) == "owner"
    mos.add(memory_content="Seven likes plums.", mem_cube_id=cube_id, user_id=7)
    assert mos.get_all(cube_id, user_id="7")["text_mem"][0]["memories"][0].user_id == "7"


def test_an_old_mos_db_is_migrated(tmp_path: Path, embedder: Any) -> None:
    home = tmp_path / "home"
    home.mkdir()
    db = sqlite3.connect(str(home / "mos.db"))
    db.executescript(
        "CREATE TABLE users (user_id TEXT PRIMARY KEY, name TEXT, role TEXT NOT NULL, created_at REAL NOT NULL);"
        "CREATE TABLE cubes (cube_id TEXT PRIMARY KEY, path TEXT NOT NULL, owner TEXT NOT NULL REFERENCES users(user_id));"
        "CREATE TABLE shares (cube_id TEXT NOT NULL REFERENCES cubes(cube_id), user_id TEXT NOT NULL"
        " REFERENCES users(user_id), access TEXT NOT NULL, PRIMARY KEY (cube_id, user_id));"
        "INSERT INTO users VALUES ('root', 'root', 'admin', 0);"
    )
    db.commit()
    db.close()
    with MOS(home, embedder=embedder) as mos:
        assert mos.list_users(user_id="root") == [{"user_id": "root", "name": "root", "role": "admin"}]
        with pytest.raises(AccessDeniedError):
            mos.create_user("bob", role="admin")  # an admin exists: no bootstrap
        assert mos.audit_log(user_id="root")[0]["target"] == "bob"
    db = sqlite3.connect(str(home / "mos.db"))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2  # an older release still opens it
    assert db.execute("SELECT version FROM schema_migrations WHERE component = 'mos_registry'").fetchone()[0] == 2
    db.close()


# -- 4. a handed-out cube view loses access when it is revoked ---------------------------------------------
def test_a_view_obtained_before_an_unshare_reads_nothing_after(mos: Any, alice_cube: str) -> None:
    mos.share_cube_with_user(alice_cube, "bob", "write", user_id="alice")
    view = mos.cube(alice_cube, user_id="bob")
    assert isinstance(view, CubeView) and as_cube(view, "test") is view  # a face takes it like a MemCube
    item = view.get_all()[0]
    assert view.search("PIN hint", top_k=1)[0].item.id == item.id
    added = view.add(memory="Bob fed the cat.")[0]
    assert added.user_id == "bob" and added.created_by == "bob"
    store = view.store  # a guard over the raw store: every call through it is checked
    mos.unshare_cube(alice_cube, "bob", user_id="alice")
    before = snapshot(_raw(mos, alice_cube))
    attempts = {
        "get": lambda: view.get(item.id),
        "get_all": lambda: view.get_all(),
        "search": lambda: view.search("PIN"),
        "history": lambda: view.history(item.id),
        "stats": lambda: view.stats(),
        "export_jsonl": lambda: view.export_jsonl(),  # refused when called, not when iterated
        "store": lambda: view.store,
        "text_mem": lambda: view.text_mem,
        "add": lambda: view.add(memory="Bob was here."),
        "update": lambda: view.update(item.id, text="changed"),
        "delete": lambda: view.delete(item.id),
        "delete_all": lambda: view.delete_all(),
    }
    for attempt in attempts.values():
        with pytest.raises(AccessDeniedError, match="ask its owner"):
            attempt()
    assert snapshot(_raw(mos, alice_cube)) == before
    denials = list(reversed(_denials(mos, alice_cube)))
    assert [d["action"] for d in denials] == list(attempts)
    assert all(d["principal"] == "bob" for d in denials)
    with pytest.raises(AccessDeniedError):  # the store taken earlier is checked on each call too
        store.read("SELECT 1")


def test_a_read_view_cannot_write_and_a_downgrade_reaches_a_write_view(mos: Any, alice_cube: str) -> None:
    mos.share_cube_with_user(alice_cube, "bob", "write", user_id="alice")
    view = mos.cube(alice_cube, user_id="bob", access="write")
    mine = view.add(memory="Bob waters the plants.")[0]
    mos.share_cube_with_user(alice_cube, "bob", "read", user_id="alice")
    assert view.get(mine.id).text == "Bob waters the plants."
    for write in (lambda: view.update(mine.id, text="x"), lambda: view.delete(mine.id),
                  lambda: view.add(memory="y"), lambda: view.relate(mine.id, mine.id, "self")):
        with pytest.raises(AccessDeniedError, match="needs write, has read"):
            write()
    with pytest.raises(AccessDeniedError, match="needs owner"):
        view.audit_log()
    with pytest.raises(AccessDeniedError):  # a view acts for its own user only
        view.add(memory="Alice says hi.", principal="alice")


def test_the_owner_view_still_works(mos: Any, alice_cube: str) -> None:
    view = mos.cube(alice_cube, user_id="alice")
    assert view.cube_id == alice_cube and view.path == _raw(mos, alice_cube).path
    assert len(view.get_all()) == 1 and view.stats()["items"] >= 1
    assert view.audit_log()[0]["action"] in {"add", "register"}
    assert "alice" in repr(view)



def test_a_mos_db_from_a_newer_release_and_a_closed_mos_are_clear_errors(tmp_path: Path, embedder: Any) -> None:
    from memos_integrations.errors import CubeCorruptedError
    from memos_integrations.storage.tables.registry import Registry

    home = tmp_path / "home"
    mos = MOS(home, embedder=embedder)
    mos.create_user("alice")
    mos.close()
    mos.close()  # twice is fine
    with pytest.raises(InvalidInputError, match="closed"):
        mos.list_cubes("alice")
    newer = len(Registry.STEPS["sqlite"]) + 1
    for statement in (f"PRAGMA user_version = {newer}",  # how releases before schema_migrations counted
                      f"UPDATE schema_migrations SET version = {newer} WHERE component = 'mos_registry'"):
        db = sqlite3.connect(str(home / "mos.db"))
        saved = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute(statement)
        db.commit()
        db.close()
        with pytest.raises(CubeCorruptedError, match="newer"):
            MOS(home, embedder=embedder)
        db = sqlite3.connect(str(home / "mos.db"))
        db.execute(f"PRAGMA user_version = {saved}")
        db.commit()
        db.close()


def test_the_owner_cannot_nest_a_cube_in_their_own_either(mos: Any, alice_cube: str) -> None:
    path = _raw(mos, alice_cube).path
    with pytest.raises(InvalidInputError, match="lies inside"):
        mos.create_cube_for_user("inner", owner_id="alice", cube_path=path / "inner")
    with pytest.raises(InvalidInputError, match="holds"):
        mos.create_cube_for_user("outer", owner_id="alice", cube_path=path.parent)
    assert not (path / "inner").exists()


def test_only_an_admin_creates_a_cube_for_someone_else(tmp_path: Path, embedder: Any) -> None:
    with MOS(tmp_path / "home", user_id="bob", embedder=embedder) as mos:
        mos.create_user("root", role="admin")
        mos.create_user("alice")
        mos.create_user("bob")
        with pytest.raises(AccessDeniedError, match="only an admin"):
            mos.create_cube_for_user("for_alice", owner_id="alice")  # bob's session acts as bob
        assert mos.create_cube_for_user("for_alice", owner_id="alice", user_id="root") == "for_alice"
        assert mos.list_cubes("alice") == [{"cube_id": "for_alice", "access": "owner"}]
        refused = mos.audit_log(user_id="root")[0]
        assert (refused["action"], refused["principal"], refused["allowed"]) == ("create_cube", "bob", False)


def test_a_view_offers_feedback_behind_the_write_check(mos: Any, alice_cube: str) -> None:
    from memos_integrations.face_api import CubeAPI

    mos.share_cube_with_user(alice_cube, "bob", "read", user_id="alice")
    view = mos.cube(alice_cube, user_id="bob")
    assert isinstance(view, CubeAPI)  # the protocol names feedback, and a view has it
    with pytest.raises(AccessDeniedError):
        view.feedback("No, the PIN hint changed.")
    assert _denials(mos, alice_cube)[-1]["action"] == "feedback"
    own = mos.cube(alice_cube, user_id="alice")
    with pytest.raises(AccessDeniedError):
        own.feedback("No, Bob moved.", user_id="bob")  # a view corrects its own user's memories only
    with pytest.raises(InvalidInputError, match="reader"):
        own.feedback("No, the PIN hint changed.")  # allowed, and the cube says what it lacks (no LLM reader)
