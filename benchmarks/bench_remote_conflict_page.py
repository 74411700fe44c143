"""What a RemoteCube face page costs with its conflict notes: one request (the notes with the search) or two
(the search, then ``POST /v1/faces/conflicts``), on loopback against the real app (uvicorn, one process).

A page is what every face does: ``cube.search(query, user_id=..., top_k=10)``, then
``organize.links.conflict_notes(cube, hits)``. Modes, interleaved page by page so load moves them alike:

- ``search only``: a search that does not ask for notes and no notes (the floor);
- ``two requests``: the search, then ``/v1/faces/conflicts`` for its hits (before: a RemoteCube that does
  not ask the search for notes, as against a service without the field);
- ``one request``: the search with ``"conflicts": true``; ``conflict_notes`` answers from it.

Each request also takes one of the key's rate tokens, so tokens per page = requests per page.
The cube: one user, ``--memories`` short first-person statements (every fifth one contradicting an earlier
one: "I live in Lisbon." / "I live in Porto."), organised without an LLM, so pages hold flagged conflicts.

Run: ``nice -n 10 env OMP_NUM_THREADS=1 python -m benchmarks.bench_remote_conflict_page [--pages 200]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from memos_integrations import MOS
from memos_integrations.organize import organize
from memos_integrations.organize.links import conflict_notes
from memos_integrations.remote import RemoteCube
from memos_integrations.server import KeyStore, Limits, create_app

PLACES = ["Lisbon", "Porto", "Braga", "Faro", "Coimbra", "Evora", "Aveiro", "Setubal"]
THINGS = ["tea", "bike", "dog", "car", "job", "team", "band", "book"]
QUERIES = ["Where do I live?", "What is my favourite tea?", "Which car do I drive?", "Where do I work?",
           "What is my dog called?", "Which band do I like?", "What book am I reading?", "Which team do I support?"]


def _statements(n: int) -> list[str]:
    out = []
    for i in range(n):
        thing, place = THINGS[i % len(THINGS)], PLACES[(i // len(THINGS)) % len(PLACES)]
        out.append(f"I live in {place}." if i % 5 == 0 else f"My {thing} note number {i} mentions {place}.")
    return out


def _serve(app: Any) -> tuple[str, Any]:
    import socket
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    return f"http://127.0.0.1:{port}", stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=200, help="pages per mode")
    ap.add_argument("--memories", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp()) / "home"
    mos = MOS(home)
    mos.create_user("alice")
    mos.create_cube_for_user("alice_cube", owner_id="alice")
    for text in _statements(args.memories):
        mos.add(memory_content=text, mem_cube_id="alice_cube", user_id="alice")
    report = organize(mos._cube("alice_cube"), reader=None)
    keys = KeyStore.open(home / "mos.db")
    key = keys.create("alice")[0]
    url, stop = _serve(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False))
    paths: list[str] = []
    client = httpx.Client(timeout=30, event_hooks={"request": [lambda r: paths.append(r.url.path)]})
    try:
        with RemoteCube(url, key, cube_id="alice_cube", client=client) as cube:
            def page(mode: str, query: str) -> tuple[float, int, int]:
                cube._ask_notes = mode == "one request"
                cube._pages.clear()  # no notes kept from another mode's page
                before = len(paths)
                start = time.perf_counter()
                hits = cube.search(query, user_id="alice", top_k=args.k)
                notes = conflict_notes(cube, [h.item for h in hits]) if mode != "search only" else {}
                return (time.perf_counter() - start) * 1e3, len(paths) - before, len(notes)

            modes = ["search only", "two requests", "one request"]
            for q in QUERIES:  # warm: the query embeddings, the cube's caches, the connection
                for m in modes:
                    page(m, q)
            times: dict[str, list[float]] = {m: [] for m in modes}
            reqs: dict[str, set[int]] = {m: set() for m in modes}
            noted: dict[str, int] = {m: 0 for m in modes}
            for i in range(args.pages):
                for m in (modes if i % 2 == 0 else modes[::-1]):
                    ms, n, with_notes = page(m, QUERIES[i % len(QUERIES)])
                    times[m].append(ms)
                    reqs[m].add(n)
                    noted[m] += with_notes
    finally:
        stop()
        mos.close()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"cube: {args.memories} memories, {report.conflicts} flagged conflicts; page: top_k={args.k}; "
          f"{args.pages} pages per mode; load {' '.join(load)}")
    print("| mode | requests (= rate tokens) per page | median ms | p90 ms | hits with notes per page |")
    print("|---|---|---|---|---|")
    for m in modes:
        t = sorted(times[m])
        print(f"| {m} | {'/'.join(map(str, sorted(reqs[m])))} | {statistics.median(t):.2f} | "
              f"{t[int(len(t) * 0.9)]:.2f} | {noted[m] / args.pages:.1f} |")


if __name__ == "__main__":
    main()
