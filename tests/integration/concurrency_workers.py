"""Worker processes for the concurrency tests (tests/integration/test_concurrency.py, tests/stress/).

They run under ``multiprocessing`` with the spawn start method, so everything here is importable
and takes plain arguments. Each worker appends what the cube acknowledged to its own JSON-lines log
(flushed per operation, so a writer killed with ``kill -9`` leaves every acknowledged write on disk);
the test then checks those acknowledgements against the cube.

The embedder is a small deterministic hashing one: these tests are about what concurrent writers and
readers see, not about embedding quality, and six processes loading MiniLM would dwarf the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DIM = 64
WORDS = ("tea garden river piano bike oboe cat dog lisbon kyoto ramen choir radio boat chess kite "
         "maple violin lantern harbor meadow copper falcon").split()


class HashEmbedder:
    """Bag of words hashed into 64 dimensions, unit length: deterministic and fast, in every process."""

    name = "hash-test"
    dimension = DIM
    fingerprint = "hash64-test-v1"

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.blake2b(word.encode(), digest_size=4).hexdigest(), 16) % DIM] += 1.0
            out[row, 0] += 1e-3  # never all zero
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def _log(fh: Any, **row: Any) -> None:
    fh.write(json.dumps(row) + "\n")
    fh.flush()  # per acknowledged write: a kill -9 right after loses nothing that was acknowledged


def writer(path: str, log: str, worker: int, shared: list[str], ops: int, seconds: float, seed: int) -> None:
    """Add, update (own and shared memories, often the same ones as other writers) and delete."""
    from memos_integrations import MemCube
    from memos_integrations.errors import ItemNotFoundError

    rng = random.Random(seed)
    cube = MemCube.open(path, embedder=HashEmbedder())
    own: list[str] = []
    deadline = time.monotonic() + seconds
    with open(log, "a", encoding="utf-8") as fh:
        _log(fh, op="start", pid=os.getpid())
        n = 0
        while n < ops and time.monotonic() < deadline:
            n += 1
            roll = rng.random()
            words = " ".join(rng.sample(WORDS, 3))
            if roll < 0.35 or not own:
                item = cube.add(memory=f"w{worker} n{n} {words}", user_id=f"w{worker}")[0]
                own.append(item.id)
                _log(fh, op="add", id=item.id, version=item.version, text=item.text, at=time.time())
            elif roll < 0.85:
                target = rng.choice(shared) if rng.random() < 0.6 else rng.choice(own)
                change: dict[str, Any] = (
                    {"text": f"w{worker} edit {n} {words}"} if rng.random() < 0.5 else {"tags": [f"w{worker}", f"n{n}"]}
                )
                try:
                    item = cube.update(target, **change)
                except ItemNotFoundError:  # another writer deleted it: nothing was acknowledged
                    continue
                _log(fh, op="update", id=item.id, version=item.version, text=item.text, tags=item.tags, at=time.time())
            else:
                target = own.pop(rng.randrange(len(own)))
                if cube.delete(target):
                    _log(fh, op="delete", id=target, at=time.time())
        _log(fh, op="done")
    cube.close()


def reader(path: str, log: str, worker: int, seconds: float, seed: int, stop: str | None = None) -> None:
    """Search through the ANN path (exact scoring off) and record every hit with when the search began,
    for ``seconds`` or until the file ``stop`` exists (checked after each search: at least one is made)."""
    from memos_integrations import MemCube
    from memos_integrations.items import LIVE_STATES

    rng = random.Random(seed)
    cube = MemCube.open(path, embedder=HashEmbedder())
    cube.text_mem.exact_search_max = 0  # every dense leg goes to the Chroma index
    live = {s.value for s in LIVE_STATES}
    deadline = time.monotonic() + seconds
    with open(log, "a", encoding="utf-8") as fh:
        _log(fh, op="start", pid=os.getpid())
        while time.monotonic() < deadline:
            began = time.time()
            user = rng.choice([None, "w0", "w1", "shared"])
            hits = cube.search(" ".join(rng.sample(WORDS, 2)), user_id=user, top_k=8)
            for hit in hits:
                assert hit.item.state.value in live, f"search returned a {hit.item.state.value} memory"
                assert user is None or hit.item.user_id == user, "search returned a memory out of scope"
            _log(fh, op="search", began=began, user=user, hits=[[h.item.id, h.item.version] for h in hits])
            if stop is not None and os.path.exists(stop):
                break
        _log(fh, op="done")
    cube.close()


def readers_around_writers(readers: Sequence[Any], reader_logs: Sequence[str | Path], writers: Sequence[Any],
                           stop: Path, timeout: float) -> None:
    """Start the reader processes, wait until each has opened the cube and logged its start, start the
    writers, and once every writer has exited create ``stop`` so the readers end after their current
    search: every reader searches during the whole of the writers' run (a fixed reading time either
    ended before slow writers did or went on searching a cube nobody was changing). Kills what hangs."""
    for p in readers:
        p.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.is_alive() for p in readers):
        if all(any(r.get("op") == "start" for r in read_log(log)) for log in reader_logs):
            break
        time.sleep(0.05)
    for p in writers:
        p.start()
    for p in writers:
        p.join(timeout)
    stop.write_text("writers done")
    for p in readers:
        p.join(timeout)
    for p in [*readers, *writers]:
        if p.is_alive():
            p.kill()
            p.join(10)


def hold_cube(path: str, ready: str, seconds: float) -> None:
    """Open an embedded cube, say so, and keep it open (the test kills this process with SIGKILL)."""
    from memos_integrations import MemCube

    cube = MemCube.open(path, embedder=HashEmbedder())
    Path(ready).write_text(str(os.getpid()))
    time.sleep(seconds)
    cube.close()


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The rows a worker wrote; a last line cut by ``kill -9`` (never acknowledged) is skipped."""
    rows: list[dict[str, Any]] = []
    if not Path(path).exists():  # killed before it wrote anything
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def check_against_truth(cube: Any, logs: Sequence[str | Path], *, shared: Sequence[str] = ()) -> dict[str, int]:
    """Every acknowledged write is in the cube with its own version, every hit was live when searched,
    and the vector index holds exactly the live memories. Returns counts for the test to report."""
    from memos_integrations.items import Lifecycle

    rows = [row for log in logs for row in read_log(log)]
    acked: dict[str, dict[int, dict[str, Any]]] = {}
    deleted_at: dict[str, float] = {}
    for row in rows:
        if row["op"] in ("add", "update"):
            versions = acked.setdefault(row["id"], {})
            assert row["version"] not in versions, f"version {row['version']} of {row['id']} acknowledged twice"
            versions[row["version"]] = row
        elif row["op"] == "delete":
            deleted_at[row["id"]] = row["at"]
    for item_id in {*acked, *shared}:
        history = cube.history(item_id)
        assert [v.version for v in history] == list(range(1, len(history) + 1)), f"{item_id}: versions not 1..n"
        by_version = {v.version: v for v in history}
        for version, row in acked.get(item_id, {}).items():
            assert version in by_version, f"acknowledged version {version} of {item_id} is missing from history()"
            assert by_version[version].text == row["text"], f"version {version} of {item_id} was overwritten"
            if "tags" in row:
                assert by_version[version].tags == row["tags"], f"version {version} of {item_id} was overwritten"
    for item_id in deleted_at:
        assert cube.store.get_items([item_id], include_deleted=True)[item_id].state == Lifecycle.DELETED
    searches = [row for row in rows if row["op"] == "search"]
    for row in searches:
        for hit_id, _ in row["hits"]:
            assert deleted_at.get(hit_id, float("inf")) > row["began"], f"search hit {hit_id} was deleted before it began"
    live = {i.id for i in cube.get_all(include_archived=True)}
    assert cube.index.ids() == live, (
        f"index and truth differ: {len(cube.index.ids() - live)} stale, {len(live - cube.index.ids())} missing"
    )
    return {"acknowledged": sum(len(v) for v in acked.values()), "deleted": len(deleted_at),
            "searches": len(searches), "live": len(live)}


def probe_open(path: str, out: str) -> None:
    """Try to open a cube and write down whether this process was refused (CubeLockedError)."""
    from memos_integrations import MemCube
    from memos_integrations.errors import CubeLockedError

    try:
        cube = MemCube.open(path, embedder=HashEmbedder())
    except CubeLockedError as exc:
        Path(out).write_text(f"locked: {exc}")
        return
    Path(out).write_text("opened")
    cube.close()
