"""Concurrent writers lose nothing.

Threads sharing one MemCube, processes sharing one cube whose vectors are on a Chroma server, and the
one-process rule of an embedded cube (a second process is refused; ``kill -9`` of the holder frees it).
Bounded: worker processes run a fixed number of operations with a deadline. The long version, with
writers killed mid-write, is tests/stress/ (run with MEMOS_STRESS=1).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from memos_integrations import MemCube
from memos_integrations.config import chroma_server as server_config
from memos_integrations.errors import ConflictError, CubeLockedError, MemosError
from memos_integrations.items import MemoryItem, utcnow
from memos_integrations.storage.base import IndexRow
from tests.integration.concurrency_workers import (
    WORDS,
    HashEmbedder,
    check_against_truth,
    hold_cube,
    reader,
    readers_around_writers,
    writer,
)

ROOT = Path(__file__).resolve().parents[2]


def test_four_threads_updating_one_memory_lose_nothing(cube, embedder) -> None:  # type: ignore[no-untyped-def]
    item = cube.add(memory="Noor's counter note, first version.", user_id="noor")[0]
    acknowledged: list[MemoryItem] = []
    guard = threading.Lock()
    start = threading.Barrier(4)

    def work(k: int) -> None:
        start.wait()
        for n in range(15):  # half re-embed (text), half do not (tags): both paths race
            change = {"text": f"Noor's note, edit {n} by thread {k}."} if n % 2 == 0 else {"tags": [f"t{k}", f"n{n}"]}
            new = cube.update(item.id, **change)
            with guard:
                acknowledged.append(new)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))  # re-raises a worker's exception
    history = cube.history(item.id)
    assert [v.version for v in history] == list(range(1, 62)), "each update gets a version of its own"
    by_version = {v.version: v for v in history}
    assert len({a.version for a in acknowledged}) == 60
    for a in acknowledged:
        assert by_version[a.version].to_dict() == a.to_dict(), f"acknowledged version {a.version} was overwritten"
    latest = cube.get(item.id)
    assert latest.version == 61
    # the stored and indexed vector is the latest text's, whichever thread wrote it
    want = embedder.embed_documents([latest.embed_text])[0]
    assert np.allclose(cube.store.vectors_by_id([item.id])[item.id], want, atol=1e-5)
    assert cube.store.outbox() == [] and cube.index.ids() == {item.id}
    top = cube.index.query(want, 1)
    assert top[0][0] == item.id and top[0][1] > 0.999


def test_expected_version_is_compare_and_set(cube) -> None:  # type: ignore[no-untyped-def]
    item = cube.add(memory="Mia's locker is number 12.", user_id="mia")[0]
    assert cube.update(item.id, text="Mia's locker is number 14.", expected_version=1).version == 2
    with pytest.raises(ConflictError, match="re-read it") as err:
        cube.update(item.id, text="Mia's locker is number 15.", expected_version=1)
    assert isinstance(err.value, MemosError) and "version 2, not the expected 1" in str(err.value)
    assert [v.text for v in cube.history(item.id)] == ["Mia's locker is number 12.", "Mia's locker is number 14."]
    assert cube.update(item.id, text="Mia's locker is number 15.", expected_version=2).version == 3  # re-read, retry

    # four threads compare-and-set from the same version: exactly one wins, the others are told to retry
    start = threading.Barrier(4)

    def attempt(k: int) -> str:
        start.wait()
        try:
            cube.update(item.id, tags=[f"winner-{k}"], expected_version=3)
            return "won"
        except ConflictError:
            return "conflict"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(attempt, range(4)))
    assert outcomes == ["conflict", "conflict", "conflict", "won"]
    assert [v.version for v in cube.history(item.id)] == [1, 2, 3, 4]


def test_search_never_returns_a_memory_deleted_by_another_thread(cube) -> None:  # type: ignore[no-untyped-def]
    items = cube.add(memory=[f"Ravi's note {n} about {w}." for n, w in enumerate(WORDS)], user_id="ravi")
    cube.text_mem.exact_search_max = 0  # the ANN path, whose hits must be re-checked against SQLite
    stop = threading.Event()
    deleted: set[str] = set()

    def delete_all() -> None:
        for it in items:
            cube.delete(it.id)
            deleted.add(it.id)
        stop.set()

    deleter = threading.Thread(target=delete_all)
    deleter.start()
    while not stop.is_set():
        gone = set(deleted)  # deleted before this search began
        hits = cube.search("Ravi's note", user_id="ravi", top_k=10)
        assert not {h.item.id for h in hits} & gone
        assert all(h.item.state.value != "deleted" for h in hits)
    deleter.join()
    assert cube.search("Ravi's note", user_id="ravi") == [] and cube.index.ids() == set()


CHILD_OPEN = textwrap.dedent(
    """
    import sys
    from memos_integrations import MemCube
    from memos_integrations.errors import CubeLockedError
    from tests.integration.concurrency_workers import HashEmbedder

    try:
        cube = MemCube.open(sys.argv[1], embedder=HashEmbedder())
    except CubeLockedError as exc:
        print("locked:", exc)
    else:
        print("opened", cube.stats()["items"])
        cube.close()
    """
)


def _open_in_child(path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD_OPEN, str(path)], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_an_embedded_cube_is_held_by_one_process(tmp_path: Path) -> None:
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=HashEmbedder()) as cube:
        cube.add(memory="Held by one process.")
        second = MemCube.open(path, embedder=HashEmbedder())  # the same process may open it again
        assert second.get_all()[0].text == "Held by one process."
        second.close()
        second.close()  # closing twice is harmless, and the first handle still holds the cube
        refused = _open_in_child(path)
        assert refused.startswith("locked:"), refused
        assert f"process {os.getpid()}" in refused and "chroma_server" in refused and "Close the cube" in refused
    assert _open_in_child(path) == "opened 1"  # closed here: another process may open it


def test_a_forked_child_does_not_inherit_the_hold(tmp_path: Path) -> None:
    from memos_integrations.cubelock import CubeHold

    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=HashEmbedder()):
        pid = os.fork()
        if pid == 0:  # the child: the parent's hold is the parent's, so the child is refused
            try:
                CubeHold(path).release()
                code = 1
            except CubeLockedError:
                code = 0
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "a forked child shared its parent's hold on the cube"
    CubeHold(path).release()  # and the child's exit did not leave the parent's lock behind


def test_kill_9_of_the_holder_frees_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=HashEmbedder()) as cube:
        kept = cube.add(memory="Still here after the holder was killed.")[0]
    ready = tmp_path / "ready"
    holder = multiprocessing.get_context("spawn").Process(target=hold_cube, args=(str(path), str(ready), 120.0))
    holder.start()
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert holder.is_alive() and time.monotonic() < deadline, "the holder did not open the cube"
            time.sleep(0.05)
        with pytest.raises(CubeLockedError, match=f"process {holder.pid}"):
            MemCube.open(path, embedder=HashEmbedder())
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        holder.join(30)
    assert holder.exitcode == -signal.SIGKILL
    with MemCube.open(path, embedder=HashEmbedder()) as cube:  # no stale lock
        assert cube.get(kept.id).text == kept.text and cube.index.ids() == {kept.id}


def test_writer_and_reader_processes_on_a_chroma_server_cube(chroma_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    host, port = chroma_server
    path = tmp_path / "served"
    with MemCube.init_from_dir(path, server_config(host, port, cube_id="conc"), embedder=HashEmbedder()) as cube:
        shared = [i.id for i in cube.add(memory=[f"shared note about {w}" for w in WORDS[:5]], user_id="shared")]
    ctx = multiprocessing.get_context("spawn")
    logs = [tmp_path / f"w{k}.jsonl" for k in range(4)] + [tmp_path / f"r{k}.jsonl" for k in range(2)]
    writers = [ctx.Process(target=writer, args=(str(path), str(logs[k]), k, shared, 30, 40.0, k)) for k in range(4)]
    stop = tmp_path / "stop"  # the readers search until the writers are done (at most 40 s)
    readers = [ctx.Process(target=reader, args=(str(path), str(logs[4 + k]), k, 40.0, 10 + k, str(stop)))
               for k in range(2)]
    readers_around_writers(readers, logs[4:], writers, stop, 120)
    procs = writers + readers
    assert [p.exitcode for p in procs] == [0] * 6, "a worker failed or hung (see its assertion above)"
    finished = utcnow()
    with MemCube.open(path, embedder=HashEmbedder()) as cube:
        # what the writers' own index drains left is already right: opening had nothing to repair, and
        # no worker's open found drift either (replaying another writer's queued rows is not drift)
        reconciles = [e for e in cube.audit_log(limit=1000) if e["action"] == "reconcile"]
        assert not [e for e in reconciles if e["at"] >= finished or e["detail"]["added"] or e["detail"]["removed"]]
        assert cube.store.outbox() == []
        counts = check_against_truth(cube, logs, shared=shared)
        assert counts["acknowledged"] >= 4 * 20 and counts["searches"] > 0
        assert max(v.version for i in shared for v in cube.history(i)) > 2  # shared memories were contended
        cube.text_mem.exact_search_max = 0
        live = {i.id for i in cube.get_all()}
        for w in WORDS:
            assert {h.item.id for h in cube.search(w, top_k=10)} <= live


def test_open_repairs_an_index_whose_ids_differ_with_equal_counts(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=embedder) as cube:
        a, b = cube.add(memory=["Sana paints murals.", "Sana teaches judo."], user_id="sana")
        cube.index.delete([a.id])  # one vector lost and one stale one added: the counts still match
        cube.index.upsert([IndexRow("ghost", user_id="sana")], embedder.embed_documents(["a memory that was never stored"]))
        assert cube.index.count() == 2
    with MemCube.open(path, embedder=embedder) as cube:
        assert cube.index.ids() == {a.id, b.id}
        assert cube.audit_log(limit=1)[0]["detail"] == {"replayed": 0, "added": 1, "removed": 1}


def test_full_reconcile_removes_vectors_of_deleted_items_whose_queue_was_lost(cube) -> None:  # type: ignore[no-untyped-def]
    keep, gone = cube.add(memory=["Tomas rows at dawn.", "Tomas sold his boat."], user_id="tomas")
    tomb = gone.evolve(state="deleted", version=gone.version + 1)
    cube.store.write_items([tomb], None)  # deleted in the truth, and its outbox row lost
    cube.store.clear_outbox(cube.store.outbox_entries())
    assert cube.index.ids() == {keep.id, gone.id}
    assert cube.reconcile(full=True) == {"replayed": 0, "added": 0, "removed": 1}
    assert cube.index.ids() == {keep.id}


def test_a_failing_index_query_falls_back_to_exact_search(cube, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    from memos_integrations.errors import BackendError

    target = cube.add(memory=["Uma keeps bees on the roof.", "Uma's car is blue."], user_id="uma")[0]
    cube.text_mem.exact_search_max = 0

    def broken(vector, k, where=None):  # type: ignore[no-untyped-def]
        raise BackendError("Chroma query (k=30) on collection 'x' failed (RuntimeError: HNSW segment unreadable)")

    monkeypatch.setattr(cube.index, "query", broken)
    assert cube.search("honey bees", user_id="uma", top_k=1)[0].item.id == target.id
    assert "scoring this search exactly" in caplog.text


def test_chroma_errors_say_what_failed_and_what_to_do(cube, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from memos_integrations.errors import BackendError

    def refuse(**kw):  # type: ignore[no-untyped-def]
        raise KeyError(78)  # what a damaged index once answered: the message must still make sense

    monkeypatch.setattr(cube.index.collection, "count", refuse)
    with pytest.raises(BackendError) as err:
        cube.index.count()
    message = str(err.value)
    assert "Chroma count on collection" in message and "KeyError: 78" in message and "reconcile()" in message


def test_a_cube_written_before_outbox_sequence_numbers_opens_and_replays(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=HashEmbedder()) as cube:
        kept, pending = cube.add(memory=["Vera bakes rye bread.", "Vera sings alto."], user_id="vera")
        cube.index.delete([pending.id])  # as if the process died before the index write
    db = sqlite3.connect(path / "memory.db")  # an older release's schema: no migrations, an outbox without seq
    db.executescript(
        "DROP TABLE schema_migrations; DROP TABLE outbox;"
        "UPDATE meta SET value = '1' WHERE key = 'schema_version';"
        "CREATE TABLE vector_outbox (item_id TEXT PRIMARY KEY, op TEXT NOT NULL);"
        f"INSERT INTO vector_outbox VALUES ('{pending.id}', 'upsert');"
    )
    db.close()
    with MemCube.open(path, embedder=HashEmbedder()) as cube:
        assert cube.index.ids() == {kept.id, pending.id} and cube.store.outbox() == []
        assert cube.audit_log(limit=1)[0]["detail"]["replayed"] == 1
        cube.update(pending.id, text="Vera sings soprano now.")
        assert cube.store.outbox() == [] and cube.history(pending.id)[-1].version == 2
