"""``memcube``: the command line for cubes.

    memcube init ./my_cube
    memcube add ./my_cube chat.jsonl --user caroline --session s1 --timestamp "1:56 pm on 8 May, 2023"
    memcube search ./my_cube "When did Caroline go to the support group?" --user caroline
    memcube show ./my_cube <id>          memcube history ./my_cube <id>
    memcube export ./my_cube out.jsonl   memcube import ./other_cube out.jsonl
    memcube stats ./my_cube              memcube reindex ./my_cube [--reembed]
    memcube chat ./my_cube "What is my cat called?" --user caroline   (a local model; default SmolLM2-135M)
    memcube demo [--local]

Errors print one line (what went wrong and what to do) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InvalidInputError, MemosError


def _load_messages(path: Path) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8") if str(path) != "-" else sys.stdin.read()
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not UTF-8 text; give a JSON or JSONL file of messages") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory; give a JSON or JSONL file of messages") from None
    try:
        if path.suffix == ".jsonl" or (text.lstrip().startswith("{") and "\n{" in text):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInputError(f"{path} is not JSON / JSONL messages: {str(exc)[:200]}") from None
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list):
        raise InvalidInputError(f"{path} must hold a list of messages, or {{'messages': [...]}}")
    return data


def _print_hit(n: int, hit: Any) -> None:
    it = hit.item
    when = it.event_time.strftime("%Y-%m-%d %H:%M") if it.event_time else "-"
    who = it.metadata.get("speaker", it.user_id or "")
    print(f"{n:>2}. {hit.score:.4f}  [{when}] {who}: {it.text}")
    print(f"    id={it.id} sources={it.sources} ranks={hit.ranks}")


def cmd_init(a: argparse.Namespace) -> None:
    from .config import CubeConfig, chroma_server
    from .cube import MemCube

    config = chroma_server(a.chroma_host, a.chroma_port) if a.chroma_port is not None else CubeConfig()
    cube = MemCube.init_from_dir(a.cube, config)
    print(f"cube {cube.cube_id!r} at {cube.path} (embedder {cube.embedder.name}, vectors {cube.config.vector.mode})")


def cmd_add(a: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .cube import MemCube

    cube = MemCube.open(a.cube)
    rows = _load_messages(Path(a.file))
    # one message per row, or one JSON object per session: {"session_id", "timestamp", "messages"}
    batches: list[tuple[str | None, Any, list[dict[str, Any]]]] = []
    if rows and isinstance(rows[0], dict) and "messages" in rows[0]:
        if not all(isinstance(r, dict) and isinstance(r.get("messages"), list) for r in rows):
            raise InvalidInputError(f"{a.file}: every session row needs a 'messages' list")
        batches = [(r.get("session_id", a.session), r.get("timestamp", a.timestamp), r["messages"]) for r in rows]  # type: ignore[union-attr]
    else:
        step = max(1, a.batch)
        batches = [(a.session, a.timestamp, rows[i : i + step]) for i in range(0, len(rows), step)]  # type: ignore[misc]
    total = sum(len(b[2]) for b in batches)
    added = 0
    with tqdm(total=total, unit="msg", desc="adding", disable=a.quiet) as bar:
        for session, when, msgs in batches:
            added += len(cube.add(messages=msgs, user_id=a.user, agent_id=a.agent, session_id=session, timestamp=when))
            bar.update(len(msgs))
    print(f"added {added} memories to {cube.cube_id!r}")


def cmd_search(a: argparse.Namespace) -> None:
    from .cube import MemCube

    cube = MemCube.open(a.cube)
    hits = cube.search(a.query, user_id=a.user, session_id=a.session, top_k=a.top_k, plan=a.plan)
    if a.json:
        print(json.dumps([{"score": h.score, "ranks": h.ranks, "item": h.item.to_dict()} for h in hits], indent=2))
        return
    for n, hit in enumerate(hits, 1):
        _print_hit(n, hit)
    if not hits:
        print("no memories match")


def cmd_show(a: argparse.Namespace) -> None:
    from .cube import MemCube

    print(json.dumps(MemCube.open(a.cube).get(a.id).to_dict(), indent=2, ensure_ascii=False))


def cmd_history(a: argparse.Namespace) -> None:
    from .cube import MemCube

    for version in MemCube.open(a.cube).history(a.id):
        print(f"v{version.version} {version.updated_at.isoformat()} {version.state.value:<9} {version.text}")


def cmd_export(a: argparse.Namespace) -> None:
    from .cube import MemCube

    n = MemCube.open(a.cube).export_jsonl(a.file)
    print(f"wrote {n} rows to {a.file}")


def cmd_import(a: argparse.Namespace) -> None:
    from .cube import MemCube

    n = MemCube.init_from_dir(a.cube).import_jsonl(a.file)
    print(f"imported {n} memories (with all their versions) into {a.cube}")


def cmd_stats(a: argparse.Namespace) -> None:
    from .cube import MemCube

    print(json.dumps(MemCube.open(a.cube).stats(), indent=2))


def cmd_reindex(a: argparse.Namespace) -> None:
    from .cube import MemCube

    n = MemCube.open(a.cube).reindex(reembed=a.reembed)
    print(f"rebuilt the vector index from SQLite: {n} items")


def cmd_demo(a: argparse.Namespace) -> None:
    from .demo import run

    run(Path(a.dir) if a.dir else None, local=a.local)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="memcube", description="Memory cubes for LLM agents.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("init", help="create a cube (or open an existing one)")
    s.add_argument("cube")
    s.add_argument("--chroma-host", default="localhost")
    s.add_argument("--chroma-port", type=int, default=None, help="keep vectors on a Chroma server")
    s.set_defaults(fn=cmd_init)
    s = sub.add_parser("add", help="add messages from a JSON or JSONL file ('-' for stdin)")
    s.add_argument("cube")
    s.add_argument("file")
    s.add_argument("--user")
    s.add_argument("--agent")
    s.add_argument("--session")
    s.add_argument("--timestamp", help='when the messages were said, e.g. "1:56 pm on 8 May, 2023"')
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_add)
    s = sub.add_parser("search", help="hybrid search")
    s.add_argument("cube")
    s.add_argument("query")
    s.add_argument("--user")
    s.add_argument("--session")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--plan", default="balanced", choices=["fast", "balanced", "deep"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_search)
    for name, fn, helptext in (("show", cmd_show, "one memory as JSON"), ("history", cmd_history, "every version of a memory")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("cube")
        s.add_argument("id")
        s.set_defaults(fn=fn)
    s = sub.add_parser("export", help="every version and edge as JSONL")
    s.add_argument("cube")
    s.add_argument("file")
    s.set_defaults(fn=cmd_export)
    s = sub.add_parser("import", help="load an export (lossless)")
    s.add_argument("cube")
    s.add_argument("file")
    s.set_defaults(fn=cmd_import)
    s = sub.add_parser("stats", help="counts by state and kind")
    s.add_argument("cube")
    s.set_defaults(fn=cmd_stats)
    s = sub.add_parser("reindex", help="rebuild the vector index from SQLite")
    s.add_argument("cube")
    s.add_argument("--reembed", action="store_true", help="embed every item again")
    s.set_defaults(fn=cmd_reindex)
    s = sub.add_parser("demo", help="the offline end-to-end demo")
    s.add_argument("--dir", help="where to keep the demo cubes (default: a temporary directory)")
    s.add_argument("--local", action="store_true", help="add the local-model part (SmolLM2-135M, ~30 s of CPU)")
    s.set_defaults(fn=cmd_demo)
    from .models.chat_cli import add_parser

    add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except MemosError as exc:
        print(f"memcube: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except (OSError, UnicodeError) as exc:  # a missing, unreadable, binary or directory argument
        print(f"memcube: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
