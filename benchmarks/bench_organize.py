"""What organising costs (issue 14): seconds per 1,000 memories, extractive (no LLM), on the LoCoMo dev split.

Each dev conversation is one user (its turns added session by session, as bench_retrieval does). Timed:

- **first run**: partitions, topic clusters and summaries, session episodes, links for every user;
- **no change**: the same again with nothing changed (every user skipped by its fingerprint);
- **one new session**: the last session of each conversation is added after the first run (the
  incremental case the scheduler meets);
- **full rebuild**: ``full=True`` over an organised cube (recomputes everything, writes nothing new).

With ``--llm`` the first run and the new session are timed again on a second cube, organised with the
LLM reader against the stand-in server of the reader issue (tests/openai_standin.py, the official
``openai`` SDK over loopback) answering each call after ``--latency`` seconds: what the organiser's
own work costs around its LLM calls (one per new or changed summary, one per conflict), not what a
real model costs (multiply the calls by its latency for that).

Ingest (embedding the turns) is not timed. Run: ``nice python -m benchmarks.bench_organize [--limit N] [--llm
--latency 0.05]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import locomo, sessions, table, turn_messages


def _ingest(cube: Any, conv: dict[str, Any], which: slice) -> int:
    n = 0
    for key, when, turns in list(sessions(conv))[which]:
        n += len(cube.add(messages=turn_messages(turns), user_id=conv["sample_id"], session_id=key, timestamp=when))
    return n


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="conversations of the dev split (default: all)")
    parser.add_argument("--llm", action="store_true", help="also organise with the LLM reader on the stand-in server")
    parser.add_argument("--latency", type=float, default=0.05, help="the stand-in's seconds per call (with --llm)")
    parser.add_argument("--person-topics", action="store_true", help="organise with OrganizePolicy(person_topics=True)")
    args = parser.parse_args()
    from memos_integrations import MemCube
    from memos_integrations.organize import OrganizePolicy
    from memos_integrations.organize import organize as plain

    def organize(*a: Any, **kw: Any) -> Any:
        return plain(*a, policy=OrganizePolicy(person_topics=args.person_topics), **kw)

    data = locomo()[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        cube = MemCube.init_from_dir(Path(tmp) / "cube")
        held_back = sum(_ingest(cube, conv, slice(0, -1)) for conv in data)
        rows: list[list[Any]] = []

        def run(name: str, memories: int, on: Any = None, **kw: Any) -> Any:
            start = time.perf_counter()
            report = organize(on or cube, **kw)
            took = time.perf_counter() - start
            rows.append([name, memories, report.users, round(took, 3), round(1000 * took / max(memories, 1), 3),
                         report.topics_written + report.episodes_written, report.links_added,
                         report.promoted + report.demoted, report.reader_calls])
            return report

        first = run("first run", held_back)
        run("no change", held_back)
        added = sum(_ingest(cube, conv, slice(-1, None)) for conv in data)
        run("one new session per user", held_back + added)
        run("full rebuild (full=True)", held_back + added, full=True)
        stats = cube.stats()
        cube.close()
        if args.llm:
            _with_llm(Path(tmp) / "llm", data, args.latency, run)
    print(f"LoCoMo dev: {len(data)} conversations (users), {held_back + added} memories; first run: "
          f"{first.clusters} topic clusters, {first.conflicts} conflicts flagged; cube now {stats['edges']} edges")
    print(table(["pass", "memories", "users organised", "seconds", "s / 1,000 memories", "summaries written",
                 "links added", "partition moves", "LLM calls"], rows))


def _with_llm(path: Path, data: list[dict[str, Any]], latency: float, run: Any) -> None:
    """The first run and a new session again, on a fresh cube, with the LLM reader on the stand-in server."""
    from memos_integrations import MemCube
    from memos_integrations.readers import LLMReader
    from tests.openai_standin import StandinServer, rule_responder

    with StandinServer(rule_responder, latency=latency) as srv:
        reader = LLMReader.from_openai(model="standin", base_url=srv.url, api_key="none")
        cube = MemCube.init_from_dir(path)
        held_back = sum(_ingest(cube, conv, slice(0, -1)) for conv in data)
        tag = f"(stand-in LLM, {latency * 1000:g} ms/call)"
        run(f"first run {tag}", held_back, on=cube, reader=reader)
        added = sum(_ingest(cube, conv, slice(-1, None)) for conv in data)
        run(f"one new session per user {tag}", held_back + added, on=cube, reader=reader)
        cube.close()


if __name__ == "__main__":
    main()
