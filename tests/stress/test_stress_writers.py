"""Minutes of concurrent writers and readers, with writers killed (SIGKILL) in the middle of writes.

Two phases share the time budget (MEMOS_STRESS_SECONDS, default 240):

* a cube whose vectors are on a Chroma server: rounds of 4 writer and 2 reader processes, one or two
  writers killed at a random moment each round; after each round the cube is opened (which replays
  what the killed writers left queued) and every acknowledged write, every search hit and the index
  are checked against SQLite (:func:`check_against_truth`);
* an embedded cube: one writer process holds it, a second process is refused (CubeLockedError), the
  holder is killed mid-write, and the next process opens the cube at once (no stale lock) and finds
  every acknowledged write and an index equal to the truth.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

from memos_integrations import MemCube
from memos_integrations.config import chroma_server as server_config
from tests.integration.concurrency_workers import WORDS, HashEmbedder, check_against_truth, probe_open, reader, writer

SECONDS = float(os.environ.get("MEMOS_STRESS_SECONDS", "240"))


def test_server_cube_writers_killed_mid_write(chroma_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    host, port = chroma_server
    path = tmp_path / "served"
    with MemCube.init_from_dir(path, server_config(host, port, cube_id="stress"), embedder=HashEmbedder()) as cube:
        shared = [i.id for i in cube.add(memory=[f"shared note about {w}" for w in WORDS[:6]], user_id="shared")]
    ctx = multiprocessing.get_context("spawn")
    rng = random.Random(7)
    logs: list[Path] = []
    deadline = time.monotonic() + SECONDS / 2
    rounds = killed = 0
    while time.monotonic() < deadline:
        rounds += 1
        round_logs = [tmp_path / f"r{rounds}-w{k}.jsonl" for k in range(4)] + [tmp_path / f"r{rounds}-r{k}.jsonl" for k in range(2)]
        logs += round_logs
        writers = [ctx.Process(target=writer, args=(str(path), str(round_logs[k]), k, shared, 10_000, 20.0, rounds * 10 + k))
                   for k in range(4)]
        readers = [ctx.Process(target=reader, args=(str(path), str(round_logs[4 + k]), k, 20.0, rounds * 10 + 5 + k))
                   for k in range(2)]
        for p in writers + readers:
            p.start()
        victims = rng.sample(writers, rng.choice([1, 2]))
        started = time.monotonic()
        while not all(log.exists() and "start" in log.read_text() for log in round_logs):
            assert time.monotonic() - started < 120, "the workers did not start"
            time.sleep(0.1)
        time.sleep(rng.uniform(0.5, 8.0))  # kill while they write
        for p in victims:
            os.kill(p.pid, signal.SIGKILL)  # type: ignore[arg-type]
            killed += 1
        for p in writers + readers:
            p.join(120)
            assert not p.is_alive(), "a worker hung"
        for p in writers + readers:
            assert p.exitcode == (-signal.SIGKILL if p in victims else 0), f"worker exit {p.exitcode}"
        with MemCube.open(path, embedder=HashEmbedder()) as cube:  # replays what killed writers left queued
            assert cube.store.outbox() == []
            counts = check_against_truth(cube, logs, shared=shared)
            cube.text_mem.exact_search_max = 0
            live = {i.id for i in cube.get_all()}
            for w in WORDS:
                assert {h.item.id for h in cube.search(w, top_k=10)} <= live
    print(f"server cube: {rounds} rounds, {killed} writers killed, {counts}")
    assert rounds >= (2 if SECONDS >= 120 else 1) and counts["acknowledged"] > (100 if SECONDS >= 120 else 10)


def test_embedded_cube_holder_killed_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "cube"
    with MemCube.init_from_dir(path, embedder=HashEmbedder()) as cube:
        shared = [i.id for i in cube.add(memory=[f"shared note about {w}" for w in WORDS[:6]], user_id="shared")]
    ctx = multiprocessing.get_context("spawn")
    rng = random.Random(11)
    logs: list[Path] = []
    deadline = time.monotonic() + SECONDS / 2
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        log, probe = tmp_path / f"e{rounds}.jsonl", tmp_path / f"probe{rounds}"
        logs.append(log)
        holder = ctx.Process(target=writer, args=(str(path), str(log), 0, shared, 10_000, 30.0, rounds))
        holder.start()
        started = time.monotonic()
        while "start" not in (log.read_text() if log.exists() else ""):
            assert holder.is_alive() and time.monotonic() - started < 90, "the writer did not start"
            time.sleep(0.05)
        second = ctx.Process(target=probe_open, args=(str(path), str(probe)))
        second.start()
        second.join(90)
        assert probe.read_text().startswith("locked:") and f"process {holder.pid}" in probe.read_text()
        time.sleep(rng.uniform(0.2, 3.0))
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        holder.join(30)
        with MemCube.open(path, embedder=HashEmbedder()) as cube:  # at once: the kernel dropped the lock
            assert cube.store.outbox() == []
            counts = check_against_truth(cube, logs, shared=shared)
    print(f"embedded cube: {rounds} holders killed, {counts}")
    assert rounds >= (3 if SECONDS >= 120 else 1) and counts["acknowledged"] > (50 if SECONDS >= 120 else 5)
