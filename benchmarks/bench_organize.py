"""What organising costs (issue 14): seconds per 1,000 memories, extractive (no LLM), on the LoCoMo dev split.

Each dev conversation is one user (its turns added session by session, as bench_retrieval does). Timed:

- **first run**: partitions, topic clusters and summaries, session episodes, links for every user;
- **no change**: the same again with nothing changed (every user skipped by its fingerprint);
- **one new session**: the last session of each conversation is added after the first run (the
  incremental case the scheduler meets);
- **full rebuild**: ``full=True`` over an organised cube (recomputes everything, writes nothing new).

Ingest (embedding the turns) is not timed. Run: ``nice python -m benchmarks.bench_organize [--limit N]``.
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
    args = parser.parse_args()
    from memos_integrations import MemCube
    from memos_integrations.organize import organize

    data = locomo()[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        cube = MemCube.init_from_dir(Path(tmp) / "cube")
        held_back = sum(_ingest(cube, conv, slice(0, -1)) for conv in data)
        rows: list[list[Any]] = []

        def run(name: str, memories: int, **kw: Any) -> Any:
            start = time.perf_counter()
            report = organize(cube, **kw)
            took = time.perf_counter() - start
            rows.append([name, memories, report.users, round(took, 3), round(1000 * took / max(memories, 1), 3),
                         report.topics_written + report.episodes_written, report.links_added,
                         report.promoted + report.demoted])
            return report

        first = run("first run", held_back)
        run("no change", held_back)
        added = sum(_ingest(cube, conv, slice(-1, None)) for conv in data)
        run("one new session per user", held_back + added)
        run("full rebuild (full=True)", held_back + added, full=True)
        stats = cube.stats()
        cube.close()
    print(f"LoCoMo dev: {len(data)} conversations (users), {held_back + added} memories; first run: "
          f"{first.clusters} topic clusters, {first.conflicts} conflicts flagged; cube now {stats['edges']} edges")
    print(table(["pass", "memories", "users organised", "seconds", "s / 1,000 memories", "summaries written",
                 "links added", "partition moves"], rows))


if __name__ == "__main__":
    main()
