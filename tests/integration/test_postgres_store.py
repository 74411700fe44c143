# ruff: noqa: F811  (the fixtures imported from tests.pg_server are redefined as parameters, as pytest wants)
"""What only the PostgreSQL cube has: its config and credentials, tsvector keyword search, the outbox
sequence, schemas per cube, and pgvector faults healing through the outbox."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig, postgres_store
from memos_integrations.errors import CubeCorruptedError, InvalidInputError, StorageUnavailableError
from memos_integrations.storage.pgvector import PgVectorIndex
from memos_integrations.textual.filters import MemoryFilter
from tests.pg_server import ENV, drop_schema, postgres_dsn  # noqa: F401


@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    drop_schema(postgres_dsn, name)


@pytest.fixture
def pgcube(tmp_path: Path, postgres_dsn: str, schema: str, embedder: Any) -> Iterator[Any]:
    cube = MemCube.init_from_dir(tmp_path / "cube", CubeConfig(store=postgres_store(postgres_dsn, schema=schema)),
                                 embedder=embedder)
    yield cube
    cube.close()


def test_the_config_one_line_gives_postgres_and_pgvector(pgcube: Any, schema: str) -> None:
    assert type(pgcube.store).__name__ == "PostgresStore" and pgcube.store.db.schema == schema
    assert isinstance(pgcube.index, PgVectorIndex)
    header = json.loads((pgcube.path / "cube.json").read_text())
    assert header["config"]["store"]["schema_name"] == schema
    assert header["config"]["vector"]["backend"] == "pgvector"
    assert not (pgcube.path / "memory.db").exists() and not (pgcube.path / "vectors").exists()


def test_keyword_search_uses_the_tsvector_index(pgcube: Any) -> None:
    items = pgcube.add(memory=["Maya is running the Lisbon marathon in May.",
                               "The choir sings on Sundays.",
                               "Maya runs every morning before work."], user_id="maya")
    store = pgcube.store
    hits = store.keyword_search(["run"], MemoryFilter(user_id="maya"), 10)  # english stemming: running, runs
    rid_of = store.rid_ids([i.id for i in items], MemoryFilter())
    assert {r for r, _ in hits} == {rid_of[items[0].id], rid_of[items[2].id]}
    assert all(s > 0 for _, s in hits) and hits == sorted(hits, key=lambda h: -h[1])
    assert store.keyword_search(["run"], MemoryFilter(user_id="someone else"), 10) == []
    assert store.keyword_search(["the", "   "], MemoryFilter(), 10) == []  # stop words only: nothing
    assert store.keyword_search(["it's", "o'brien", "a&b|c!", "'"], MemoryFilter(), 10) == []  # quoted, never parsed
    assert store.term_counts(["maya", "choir", "absent"]) == {"maya": 2, "choir": 1, "absent": 0}
    hit = pgcube.search("who sings on sundays", user_id="maya", plan="keyword")[0] if _has_plan(pgcube, "keyword") \
        else pgcube.search("who sings on sundays", user_id="maya")[0]
    assert hit.item.id == items[1].id
    pgcube.update(items[1].id, text="The choir rehearses on Fridays.")
    assert store.term_counts(["sundays", "fridays"]) == {"sundays": 0, "fridays": 1}  # re-indexed with the text
    pgcube.delete([items[1].id])
    assert store.term_counts(["fridays"]) == {"fridays": 0}
    assert store.integrity_problems() == []


def _has_plan(cube: Any, name: str) -> bool:
    from memos_integrations.textual import retrieve

    try:
        retrieve.plan_named(name)
        return True
    except Exception:  # noqa: BLE001 - an unknown preset name: search with the default plan
        return False


def test_outbox_order_comes_from_a_sequence(pgcube: Any) -> None:
    """Two writers queueing at once never share a number (``MAX(seq) + 1`` would give both the same)."""
    store = pgcube.store
    barrier = threading.Barrier(2)

    def queue(ids: list[str]) -> None:
        with store.transaction():
            store.queue_index(ids, target="graph")
            barrier.wait(10)  # both transactions are open with their rows queued

    threads = [threading.Thread(target=queue, args=([f"a{k}" for k in range(5)],)),
               threading.Thread(target=queue, args=([f"b{k}" for k in range(5)],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [s for _, s in store.outbox_entries("graph")]
    assert len(seqs) == len(set(seqs)) == 10
    store.queue_index(["a0"], target="graph")  # queued again: a newer number than every other
    last = store.outbox_entries("graph")[-1]
    assert last[0] == "a0" and last[1] > max(seqs)


def test_a_failed_pgvector_write_heals_on_the_next_write(pgcube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = PgVectorIndex.upsert
    monkeypatch.setattr(PgVectorIndex, "upsert", lambda self, rows, vectors: (_ for _ in ()).throw(RuntimeError("down")))
    first = pgcube.add(memory="Omar restores old radios.", user_id="omar")[0]  # stored; the index write queued
    assert pgcube.store.outbox() == [(first.id, "upsert")]
    monkeypatch.setattr(PgVectorIndex, "upsert", real)
    second = pgcube.add(memory="Omar collects valves.", user_id="omar")[0]
    assert pgcube.store.outbox() == [] and pgcube.index.ids() == {first.id, second.id}


def test_a_new_cube_needs_a_schema_of_its_own(tmp_path: Path, postgres_dsn: str, pgcube: Any, schema: str,
                                              embedder: Any) -> None:
    with pytest.raises(CubeCorruptedError, match="already holds a cube"):
        MemCube.init_from_dir(tmp_path / "second", CubeConfig(store=postgres_store(postgres_dsn, schema=schema)),
                              embedder=embedder)
    assert not (tmp_path / "second" / "cube.json").exists()
    other = f"t_{uuid.uuid4().hex[:12]}"
    try:  # one database, many cubes
        with MemCube.init_from_dir(tmp_path / "third", CubeConfig(store=postgres_store(postgres_dsn, schema=other)),
                                   embedder=embedder) as third:
            third.add(memory="only in the third cube", user_id="u")
            pgcube.add(memory="only in the first cube", user_id="u")
            assert [i.text for i in third.get_all(user_id="u")] == ["only in the third cube"]
            assert [i.text for i in pgcube.get_all(user_id="u")] == ["only in the first cube"]
    finally:
        drop_schema(postgres_dsn, other)


def test_a_cube_json_pointing_at_an_empty_schema_is_refused(pgcube: Any, postgres_dsn: str, schema: str,
                                                            embedder: Any) -> None:
    path = pgcube.path
    pgcube.close()
    drop_schema(postgres_dsn, schema)
    with pytest.raises(CubeCorruptedError, match="holds no cube"):
        MemCube.open(path, embedder=embedder)


def test_snapshot_says_how_to_copy_a_postgres_cube(pgcube: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="pg_dump"):
        pgcube.dump(tmp_path / "copy")
    assert not (tmp_path / "copy").exists() or not any((tmp_path / "copy").iterdir())


def test_pgvector_needs_the_postgres_store() -> None:
    from memos_integrations.config import VectorConfig

    with pytest.raises(ValueError, match="postgres_store"):
        CubeConfig(vector=VectorConfig(backend="pgvector"))


# -- credentials --------------------------------------------------------------------------------------------

@pytest.fixture
def password_role(postgres_dsn: str) -> Iterator[tuple[str, str]]:
    """A role that must log in with a password (scram), on the pgserver instance (trust for everyone else)."""
    import os

    import psycopg

    if os.environ.get(ENV):
        pytest.skip(f"changing pg_hba.conf needs the private pgserver instance (unset {ENV})")
    role, password = f"app_{uuid.uuid4().hex[:8]}", "s3cret-" + uuid.uuid4().hex[:6]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            psycopg.sql.Identifier(role), psycopg.sql.Literal(password)))
        conn.execute(psycopg.sql.SQL("GRANT CREATE ON DATABASE postgres TO {}").format(psycopg.sql.Identifier(role)))
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
        before = hba.read_text()
        hba.write_text(f"local all {role} scram-sha-256\n" + before)
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield role, password
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            hba.write_text(before)
            conn.execute("SELECT pg_reload_conf()")


def test_a_password_is_used_but_never_written_and_reopening_reads_pgpassword(
        tmp_path: Path, postgres_dsn: str, schema: str, embedder: Any, password_role: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    role, password = password_role
    time.sleep(0.2)  # the reload is asynchronous
    params: dict[str, Any] = {**conninfo_to_dict(postgres_dsn), "user": role, "password": password}
    with_password = make_conninfo("", **params)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, CubeConfig(store=postgres_store(with_password, schema=schema)),
                               embedder=embedder) as cube:
        cube.add(memory="Ada keeps her keys in the blue bowl.", user_id="ada")
    written = "".join(p.read_text(errors="replace") for p in path.rglob("*") if p.is_file())
    assert password not in written and role in (path / "cube.json").read_text()
    with pytest.raises(StorageUnavailableError, match="PGPASSWORD") as info:  # no password anywhere now
        MemCube.open(path, embedder=embedder)
    assert password not in str(info.value)
    monkeypatch.setenv("PGPASSWORD", password)
    with MemCube.open(path, embedder=embedder) as cube:  # credentials from the environment, as libpq reads them
        assert [i.text for i in cube.get_all(user_id="ada")] == ["Ada keeps her keys in the blue bowl."]


# -- faults at the cube level -------------------------------------------------------------------------------

def test_a_connection_lost_mid_write_leaves_nothing_half_written(pgcube: Any, postgres_dsn: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    store = type(pgcube.store)
    real = store._index_texts

    def die_halfway(self: Any, tx: Any, rows: Any) -> None:  # items and versions are written by now
        pid = tx.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:  # a DBA, a failover, a network cut
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        real(self, tx, rows)

    monkeypatch.setattr(store, "_index_texts", die_halfway)
    with pytest.raises(StorageUnavailableError, match="nothing of it was written"):
        pgcube.add(memory="Noor bakes bread on Fridays.", user_id="noor")
    monkeypatch.setattr(store, "_index_texts", real)
    db = pgcube.store.db
    assert [db.scalar(f"SELECT count(*) FROM {t}") for t in ("items", "versions", "vectors", "outbox")] == [0, 0, 0, 0]
    item = pgcube.add(memory="Noor bakes bread on Fridays.", user_id="noor")[0]  # the next write just works
    assert pgcube.get(item.id).version == 1 and pgcube.index.ids() == {item.id}


def test_a_restarted_server_is_survived_by_the_cube(tmp_path: Path, embedder: Any) -> None:
    import os
    import shutil
    import tempfile

    from tests.pg_server import start_pgserver

    if os.environ.get(ENV):
        pytest.skip(f"restarting a server needs a private pgserver instance (unset {ENV})")
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    home = Path(tempfile.mkdtemp(prefix="memos-pg-"))
    server = start_pgserver(home / "data")
    try:
        config = CubeConfig(store=postgres_store(server.get_uri(), schema="restart"))
        with MemCube.init_from_dir(tmp_path / "cube", config, embedder=embedder) as cube:
            first = cube.add(memory="Elif repairs clocks.", user_id="elif")[0]
            pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user)
            assert cube.search("who repairs clocks", user_id="elif")[0].item.id == first.id  # reads reconnect
            second = cube.add(memory="Elif sings in a choir.", user_id="elif")[0]  # so does a new write
            assert {i.id for i in cube.get_all(user_id="elif")} == {first.id, second.id}
            assert cube.index.ids() == {first.id, second.id}
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def test_the_index_lock_serialises_drains_across_processes(pgcube: Any) -> None:
    """What a second machine's drain would do: wait for the first (a file lock only spans one machine)."""
    lock = pgcube.store.index_write_lock()
    other = type(lock)(type(pgcube.store.db)(pgcube.store.db.dsn, schema=pgcube.store.db.schema))
    order: list[str] = []
    with lock.hold():
        with lock.hold():  # re-entrant in one thread (reconcile drains inside its own hold)
            waiter = threading.Thread(target=lambda: (other.hold().__enter__(), order.append("second")))
            waiter.start()
            waiter.join(0.5)
            order.append("first")
            assert waiter.is_alive()  # still waiting for the first holder
    waiter.join(10)
    assert order == ["first", "second"]
    other.db.close()


def test_concurrent_searches_share_the_vector_cache_safely(pgcube: Any, postgres_dsn: str) -> None:
    """Threads searching one PostgreSQL cube while another writes: the in-memory vector cache is guarded
    on PostgreSQL too (it was guarded only where the database object had a lock, i.e. SQLite, so a
    service's concurrent searches answered 500 with IndexError / broadcast errors)."""
    import threading

    pgcube.add(memory=[f"note {i}: the {['red', 'blue', 'green'][i % 3]} kite number {i}" for i in range(60)],
               user_id="u")
    rids = sorted(pgcube.store.read("SELECT rid FROM items"))
    rids = [r[0] for r in rids]
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader(k: int) -> None:
        try:
            for n in range(150):
                part = rids[(k + n) % 7::3]
                found, matrix = pgcube.store.vectors_for(part)
                assert len(found) == matrix.shape[0]
        except BaseException as exc:  # noqa: BLE001  (collected and re-raised by the test)
            failures.append(exc)

    def writer() -> None:
        import psycopg

        # each transaction that takes an id moves the server's snapshot (the store's data version), so
        # readers keep clearing and refilling the cache under each other
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("SELECT txid_current()")

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(6)]
    w = threading.Thread(target=writer)
    w.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    w.join()
    assert not failures, failures[:3]
