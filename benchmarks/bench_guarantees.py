"""What the trust guarantees cost: checks on open, concurrent and compare-and-set updates, the search
re-read under the filter, and chat-sized input. Each table puts the guarded path beside its baseline
in the same run; times are medians over repeats (search: p50/p95 over distinct queries).

    python -m benchmarks.bench_guarantees            # about 4 minutes on 2 busy CPU cores
    python -m benchmarks.bench_guarantees --quick    # a smoke run: small cubes, few repeats

1. Open: ``MemCube.open`` of a cube of N generated sentences with both checks, and with each switched
   off for the baseline only (interleaved, same files): the ``memory.db`` check (``check_database``:
   size, header, ``PRAGMA quick_check``; skipped as ``read_header(verify=False)`` would) and the
   index-id verification (``VERIFY_IDS_MAX`` set to -1: counts only, as above 20,000 items). Each
   check is also timed alone. chromadb keeps one client per path within a process, so every repeat is a
   warm open (the first open in a process also starts Chroma). Open never embeds: the open cubes reuse
   the search cube's real vectors (jittered) past its size.
2. ``update()``: 200 updates of distinct memories by one thread, and by 4 threads (50 each) sharing one
   MemCube; a text change (embedded, outside the write lock) and a metadata-only change (no embedding);
   without and with ``expected_version`` (compare-and-set on the version each update returned). As
   throughput differences between rounds are mostly machine noise, compare-and-set is also measured
   paired: one thread, on and off alternating update by update, per-update latency.
3. Search on a 2,000-item cube: with and without a user filter, and a cube of the same item count
   holding 20 long messages (indexed as parts). Search re-reads its final hits from SQLite under the
   filter and cannot skip it, so the re-read itself is timed where it runs (``store.get_by_rid`` with
   a filter, wrapped on the instance) and shown beside the search it belongs to.
4. Chat-sized input: a normal query against 36,000- and 200,000-character pasted ones, and
   ``cube.add`` of a 40,000-character message (kept whole, indexed as parts).

Every query is distinct and its latency includes embedding it. One BLAS/torch thread
(``OMP_NUM_THREADS=1``, threadpoolctl), so a busy 2-core machine perturbs it less.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch load, when run as a script

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

import memos_integrations.cube as cube_module
from memos_integrations import CubeConfig, MemCube
from memos_integrations.cube import VERIFY_IDS_MAX, check_database, read_header
from memos_integrations.textual.embed import MiniLMEmbedder
from memos_integrations.textual.memory import new_item

from .bench_scale import corpus, questions
from .common import pct, table

USERS = 10


@contextmanager
def one_thread() -> Iterator[None]:
    """One BLAS and one torch thread for the run (restored afterwards: the smoke test runs in-process)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=1):
        if torch is not None:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if torch is not None and before is not None:
                torch.set_num_threads(before)


def ms(seconds: float) -> float:
    return seconds * 1000


def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def vectors_for(base: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors: the real ones first, then copies of them jittered (open does not embed)."""
    if n <= len(base):
        return base[:n]
    rng = np.random.default_rng(seed)
    extra = base[np.arange(len(base), n) % len(base)] + rng.normal(0, 0.05, (n - len(base), base.shape[1]))
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.vstack([base, extra.astype(np.float32)])


def build(path: Path, embedder: Any, texts: Sequence[str], vectors: np.ndarray,
          config: CubeConfig | None = None) -> MemCube:
    """A cube of ``texts`` spread over ``USERS`` users, written with their precomputed vectors."""
    cube = MemCube.create(path, config, embedder=embedder)
    for start in range(0, len(texts), 1000):
        chunk = texts[start : start + 1000]
        items = [new_item(t, user_id=f"user{(start + i) % USERS}") for i, t in enumerate(chunk)]
        cube.add_items(items, vectors=vectors[start : start + len(chunk)])
    return cube


def long_text(chars: int, seed: int) -> str:
    """A pasted log of generated sentences, ``chars`` characters long."""
    words = corpus(max(20, chars // 60), seed=seed)
    return " ".join(words)[:chars]


# -- 1. open -------------------------------------------------------------------------------------
def _skip_check(db: Path) -> None:
    """``check_database`` switched off: what ``read_header(verify=False)`` does."""


@contextmanager
def checks(db: bool, ids: bool) -> Iterator[None]:
    """Open with the ``memory.db`` check and the index-id verification on or off (the baseline only)."""
    saved = cube_module.check_database, cube_module.VERIFY_IDS_MAX
    if not db:
        cube_module.check_database = _skip_check
    if not ids:
        cube_module.VERIFY_IDS_MAX = -1  # counts only, as above the limit
    try:
        yield
    finally:
        cube_module.check_database, cube_module.VERIFY_IDS_MAX = saved


OPEN_VARIANTS = {"open": (True, True), "no_db_check": (False, True), "no_id_check": (True, False),
                 "bare": (False, False)}


def bench_open(path: Path, embedder: Any, repeats: int) -> dict[str, Any]:
    parts: dict[str, list[float]] = {k: [] for k in (*OPEN_VARIANTS, "header", "header_verified", "check",
                                                    "replay", "ids")}
    items = 0
    for _ in range(repeats):
        parts["header"].append(clock(lambda: read_header(path, verify=False))[0])
        parts["header_verified"].append(clock(lambda: read_header(path))[0])
        parts["check"].append(clock(lambda: check_database(path / "memory.db"))[0])
        for name, (db, ids) in OPEN_VARIANTS.items():
            with checks(db, ids):
                start = time.perf_counter()
                opened = MemCube.open(path, embedder=embedder)
                parts[name].append(time.perf_counter() - start)
            opened.close()
        cube = MemCube.open(path, embedder=embedder)
        try:
            start = time.perf_counter()
            cube.text_mem.reconcile(full=False)  # the outbox replay every open does
            replay = time.perf_counter() - start
            start = time.perf_counter()
            report = cube.text_mem.reconcile(full=True)  # the same, plus the id diff
            full = time.perf_counter() - start
            assert not any(report.values()), f"the benchmark cube drifted: {report}"
            parts["replay"].append(replay)
            parts["ids"].append(max(0.0, full - replay))
            items = cube.stats()["items"]
        finally:
            cube.close()
    med = {k: statistics.median(v) for k, v in parts.items()}
    med["items"] = items
    med["db_mb"] = (path / "memory.db").stat().st_size / 1e6
    med["verified_on_open"] = items <= VERIFY_IDS_MAX
    return med


def open_table(rows: Sequence[dict[str, Any]], repeats: int) -> str:
    opens, alone = [], []
    for r in rows:
        opens.append([f"{r['items']:,}", f"{r['db_mb']:.1f}", f"{ms(r['open']):.1f}", f"{ms(r['no_db_check']):.1f}",
                      f"{ms(r['no_id_check']):.1f}", f"{ms(r['bare']):.1f}", f"+{ms(r['open'] - r['bare']):.1f}",
                      f"{r['open'] / r['bare']:.2f}x"])
        alone.append([f"{r['items']:,}", f"{ms(r['check']):.1f}", f"{ms(r['check']) / r['db_mb']:.2f}",
                      f"{ms(r['header_verified']):.1f} / {ms(r['header']):.2f}", f"{ms(r['ids']):.1f}",
                      "yes" if r["verified_on_open"] else f"no (above {VERIFY_IDS_MAX:,})"])
    return (f"MemCube.open, ms (medians of {repeats}, variants interleaved)\n\n" + table(
        ["items", "memory.db MB", "with both checks", "without the memory.db check", "without the id verification",
         "without both", "cost of both", "with / without"], opens)
        + f"\n\nThe checks alone, ms (medians of {repeats})\n\n" + table(
        ["items", "check_database", "ms per MB", "read_header verify=True / False", "index-id verification",
         "verified on open"], alone))


# -- 2. update -----------------------------------------------------------------------------------
def bench_updates(cube: MemCube, ids: Sequence[str], repeats: int, threads: int) -> dict[Any, Any]:
    """Updates per second (median of ``repeats``) for (change, compare-and-set, threads), and per change
    ``("paired", change)``: per-update p50 seconds without and with compare-and-set, alternating."""
    versions = {i: cube.get(i).version for i in ids}
    texts = {i: cube.get(i).text for i in ids}
    counter = iter(range(10**9))
    lock = threading.Lock()

    def changes_for(item_id: str, change: str, cas: bool, round_no: int) -> dict[str, Any]:
        changes: dict[str, Any] = (
            {"text": f"{texts[item_id]} (edit {round_no})"} if change == "text" else {"metadata": {"edit": round_no}})
        if cas:
            changes["expected_version"] = versions[item_id]
        return changes

    def run(change: str, cas: bool, n_threads: int) -> float:
        round_no = next(counter)
        slices = [list(ids[k::n_threads]) for k in range(n_threads)]
        errors: list[BaseException] = []
        gate = threading.Barrier(n_threads + 1)

        def worker(mine: list[str]) -> None:
            gate.wait()
            try:
                for item_id in mine:
                    new = cube.update(item_id, **changes_for(item_id, change, cas, round_no))
                    with lock:
                        versions[item_id] = new.version
            except BaseException as exc:  # reported below: a failed update must fail the benchmark
                errors.append(exc)

        workers = [threading.Thread(target=worker, args=(s,)) for s in slices]
        for w in workers:
            w.start()
        gate.wait()
        start = time.perf_counter()
        for w in workers:
            w.join()
        secs = time.perf_counter() - start
        if errors:
            raise errors[0]
        return len(ids) / secs

    def paired(change: str) -> tuple[float, float]:
        round_no = next(counter)
        took: dict[bool, list[float]] = {False: [], True: []}
        for k, item_id in enumerate(ids):
            cas = bool(k % 2)
            changes = changes_for(item_id, change, cas, round_no)
            start = time.perf_counter()
            versions[item_id] = cube.update(item_id, **changes).version
            took[cas].append(time.perf_counter() - start)
        return statistics.median(took[False]), statistics.median(took[True])

    rates: dict[tuple[str, bool, int], list[float]] = {}
    for change in ("text", "metadata"):
        for _ in range(repeats):  # interleaved, so drift in machine load hits every variant alike
            for cas in (False, True):
                for n in (1, threads):
                    rates.setdefault((change, cas, n), []).append(run(change, cas, n))
    done: dict[Any, Any] = {k: statistics.median(v) for k, v in rates.items()}
    for change in ("text", "metadata"):
        done[("paired", change)] = paired(change)
    stored = {i: cube.get(i).version for i in ids}
    assert stored == versions, "an acknowledged update is missing: versions differ from what update returned"
    return done


LABELS = {"text": "text change (embedded)", "metadata": "metadata only (no embedding)"}


def update_table(res: dict[Any, Any], n: int, threads: int, repeats: int) -> str:
    rows, pairs = [], []
    for change, label in LABELS.items():
        for cas in (False, True):
            one, many = res[(change, cas, 1)], res[(change, cas, threads)]
            rows.append([label, "on" if cas else "off", f"{one:.0f}", f"{many:.0f}", f"{many / one:.2f}x"])
        off, on = res[("paired", change)]
        pairs.append([label, f"{ms(off):.1f}", f"{ms(on):.1f}", f"{on / off:.2f}x"])
    return (f"update() on one shared MemCube, {n} distinct memories per round (updates/s, median of {repeats})\n\n"
            + table(["change", "expected_version", f"1 thread x {n}", f"{threads} threads x {n // threads}",
                     f"{threads} threads / 1"], rows)
            + f"\n\nexpected_version, paired: one thread, {n} updates alternating off and on (per-update p50 ms)\n\n"
            + table(["change", "off", "on", "on / off"], pairs))


# -- 3. search -----------------------------------------------------------------------------------
class ReReadProbe:
    """Times the search's re-read of its hits under the filter (``get_by_rid`` called with a filter)."""

    def __init__(self, cube: MemCube) -> None:
        self.times: list[float] = []
        store = cube.store
        real = store.get_by_rid

        def timed(rids: Sequence[int], flt: Any = None) -> Any:
            if flt is None:
                return real(rids)
            start = time.perf_counter()
            try:
                return real(rids, flt)
            finally:
                self.times.append(time.perf_counter() - start)

        store.get_by_rid = timed  # type: ignore[method-assign]


def latencies(cube: MemCube, queries: Sequence[str], **kwargs: Any) -> list[float]:
    embedder = cube.embedder
    if isinstance(embedder, MiniLMEmbedder):
        embedder.clear_query_cache()  # every query pays its own embedding
    out = []
    for q in queries:
        start = time.perf_counter()
        cube.search(q, top_k=10, **kwargs)
        out.append(time.perf_counter() - start)
    return out


def bench_search(cubes: dict[str, MemCube], queries: int) -> list[list[Any]]:
    qs = iter(questions(queries * 2 * len(cubes), seed=7))
    rows = []
    for label, cube in cubes.items():
        probe = ReReadProbe(cube)
        for scope, kwargs in (("no filter", {}), ("user filter (1 of 10)", {"user_id": "user3"})):
            probe.times.clear()
            lat = latencies(cube, [next(qs) for _ in range(queries)], **kwargs)
            reread = pct(probe.times, 50)
            rows.append([label, scope, f"{ms(pct(lat, 50)):.1f}", f"{ms(pct(lat, 95)):.1f}", f"{ms(reread):.2f}",
                         f"{reread / pct(lat, 50):.1%}"])
    return rows


# -- 4. chat-sized input -------------------------------------------------------------------------
def bench_chat(cube: MemCube, scratch: MemCube, sizes: Sequence[int], repeats: int, message_chars: int,
               add_repeats: int) -> tuple[list[list[Any]], dict[str, Any]]:
    rows = []
    normal = latencies(cube, questions(repeats * 4, seed=11))
    rows.append(["normal question", f"{len(questions(1, seed=11)[0])}", f"{ms(pct(normal, 50)):.1f}",
                 f"{ms(pct(normal, 95)):.1f}"])
    for chars in sizes:  # distinct pasted texts, each ending in a question
        pasted = [long_text(chars - 80, seed=100 + chars + r) + " " + q
                  for r, q in enumerate(questions(repeats, seed=chars))]
        lat = latencies(cube, pasted)
        rows.append(["pasted log + question", f"{chars:,}", f"{ms(pct(lat, 50)):.1f}", f"{ms(pct(lat, 95)):.1f}"])
    secs, parts = [], 0
    for r in range(add_repeats):
        msg = long_text(message_chars, seed=900 + r)
        start = time.perf_counter()
        added = scratch.add(messages=[{"role": "user", "content": msg}], user_id="paste")
        took = time.perf_counter() - start
        secs.append(took)
        parts = sum(1 for it in scratch.get_all(user_id="paste", kinds=["chunk"])
                    if it.metadata.get("part_of") == added[0].id)
        assert scratch.get(added[0].id).text == msg, "the long message was not stored whole"
    return rows, {"chars": message_chars, "seconds": statistics.median(secs), "parts": parts, "repeats": add_repeats}


# -- the run -------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="a smoke run: small cubes, few repeats (seconds)")
    args = ap.parse_args(argv)
    q = args.quick
    open_sizes = [200, 500] if q else [1_000, 10_000]
    search_items, long_messages, long_chars = (200, 2, 3_000) if q else (2_000, 5, 40_000)
    repeats, update_repeats, n_updates = (2, 1, 12) if q else (5, 2, 200)
    queries, chat_repeats = (10, 2) if q else (100, 10)
    sizes, message_chars, add_repeats = ([36_000], 5_000, 1) if q else ([36_000, 200_000], 40_000, 3)
    # the quick run indexes parts above 2,000 chars (default 32,000), so small texts take the same path
    long_config = CubeConfig(max_text_chars=2_000) if q else None
    threads = 4
    began = time.perf_counter()
    embedder = MiniLMEmbedder()
    _ = embedder.fingerprint
    result: dict[str, Any] = {}
    out: list[str] = []
    with one_thread(), tempfile.TemporaryDirectory(prefix="bench_guarantees_") as tmp:
        root = Path(tmp)
        texts = corpus(max(open_sizes))
        secs, real = clock(lambda: embedder.embed_documents(texts[:search_items]))
        print(f"embedded {search_items:,} sentences in {secs:.1f} s; building cubes", flush=True)

        rows = []
        for n in open_sizes:
            build(root / f"open_{n}", embedder, texts[:n], vectors_for(real, n)).close()
            rows.append(bench_open(root / f"open_{n}", embedder, repeats))
        result["open"] = rows
        out.append(open_table(rows, repeats))
        print(out[-1] + "\n", flush=True)

        scratch = build(root / "updates", embedder, texts[:n_updates], vectors_for(real, n_updates), long_config)
        ids = [it.id for it in scratch.get_all()]
        result["updates"] = bench_updates(scratch, ids, update_repeats, threads)
        out.append(update_table(result["updates"], n_updates, threads, update_repeats))
        print(out[-1] + "\n", flush=True)

        plain = build(root / "search", embedder, texts[:search_items], real)
        with_parts = build(root / "search_parts", embedder, texts[: search_items - long_messages],
                           real[: search_items - long_messages], long_config)
        for k in range(long_messages):
            with_parts.add(messages=[{"role": "user", "content": long_text(long_chars, seed=500 + k)}],
                           user_id=f"user{k % USERS}")
        n_parts = len(with_parts.get_all(kinds=["chunk"]))
        cubes = {f"{search_items:,} sentences": plain,
                 f"{search_items - long_messages:,} sentences + {long_messages} messages of {long_chars:,} chars "
                 f"({n_parts} parts)": with_parts}
        result["search"] = bench_search(cubes, queries)
        out.append(f"Search, top 10, {queries} distinct queries per row (query embedding included)\n\n" + table(
            ["cube", "scope", "p50 ms", "p95 ms", "re-read under the filter, p50 ms", "re-read / search p50"],
            result["search"]))
        print(out[-1] + "\n", flush=True)
        with_parts.close()

        chat, added = bench_chat(plain, scratch, sizes, chat_repeats, message_chars, add_repeats)
        result["chat"], result["add_long"] = chat, added
        out.append(f"Chat-sized input on the {search_items:,}-item cube ({chat_repeats} distinct queries per size)\n\n"
                   + table(["query", "chars", "p50 ms", "p95 ms"], chat)
                   + f"\n\ncube.add of one {added['chars']:,}-char message: {added['seconds']:.2f} s (median of "
                   f"{added['repeats']}), stored whole and indexed as {added['parts']} parts")
        print(out[-1], flush=True)
        plain.close()
        scratch.close()
    result["report"] = "\n\n".join(out)
    print(f"\n(the whole run: {time.perf_counter() - began:.0f} s)")
    return result


if __name__ == "__main__":
    main()
