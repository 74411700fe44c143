"""``memcube``: the command line for cubes.

    memcube init ./my_cube
    memcube add ./my_cube chat.jsonl --user caroline --session s1 --timestamp "1:56 pm on 8 May, 2023"
    memcube search ./my_cube "When did Caroline go to the support group?" --user caroline
    memcube show ./my_cube <id>          memcube history ./my_cube <id>
    memcube export ./my_cube out.jsonl   memcube import ./other_cube out.jsonl
    memcube stats ./my_cube              memcube reindex ./my_cube [--reembed | --graph]
    memcube organize ./my_cube [--user caroline] [--full]   (partitions, summaries, episodes, links)
    memcube import --from mem0 mem0.json ./my_cube   memcube export --to memos ./my_cube ./memos_dir
    memcube mcp --home ./mos_home --user alice       (MCP over stdio, for desktop clients)
    memcube migrate ./my_cube ./my_cube_pg --postgres postgresql://app@db/memory   (and back, without --postgres)
    memcube demo [--local]
    memcube keys create --home ./mos_home --user alice     memcube serve --home ./mos_home --port 8765
    memcube chat ./my_cube "What is my cat called?" --user caroline   (a local model; default SmolLM2-135M)

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

    if a.to:  # memcube export --to mem0|memos CUBE DST
        from .interop import export_to

        count = export_to(a.to, MemCube.open(a.cube), a.file)
        print(f"wrote {count} memories to {a.file} ({a.to} format)")
        return
    n = MemCube.open(a.cube).export_jsonl(a.file)
    print(f"wrote {n} rows to {a.file}")


def cmd_import(a: argparse.Namespace) -> None:
    from .cube import MemCube

    if a.source:  # memcube import --from mem0|memos SRC CUBE
        from .interop import import_from

        options = {"skip_pickles": True} if a.skip_pickles else {}
        n = import_from(a.source, MemCube.init_from_dir(a.file), a.cube, **options)
        print(f"imported {n} memories from {a.cube} ({a.source} format) into {a.file}")
        return
    n = MemCube.init_from_dir(a.cube).import_jsonl(a.file)
    print(f"imported {n} memories (with all their versions) into {a.cube}")


def cmd_mcp(a: argparse.Namespace) -> None:
    from .mos import MOS
    from .server.mcp import run_stdio

    with MOS(a.home) as mos:
        run_stdio(mos, a.user)


def cmd_stats(a: argparse.Namespace) -> None:
    from .cube import MemCube

    print(json.dumps(MemCube.open(a.cube).stats(), indent=2))


def cmd_reindex(a: argparse.Namespace) -> None:
    from .cube import MemCube

    if a.graph:
        with MemCube.open(a.cube) as cube:
            rebuild = getattr(cube.graph, "rebuild", None)  # only a projected graph (neo4j) has one
            if rebuild is None:
                raise InvalidInputError(f"cube {a.cube} keeps its graph in its own store (the truth itself): "
                                        "there is no graph projection to rebuild")
            print(f"rebuilt the graph projection from the cube: {rebuild()} ids")
        return
    n = MemCube.open(a.cube).reindex(reembed=a.reembed)
    print(f"rebuilt the vector index from SQLite: {n} items")


def cmd_organize(a: argparse.Namespace) -> None:
    from .cube import MemCube

    with MemCube.open(a.cube) as cube:
        report = cube.organize(a.user, full=a.full)
    print(json.dumps(report.as_dict(), indent=2))


def cmd_migrate(a: argparse.Namespace) -> None:
    from .config import postgres_store
    from .storage.transfer import migrate_cube

    def progress(table: str, done: int, total: int) -> None:
        width = 30
        bar = "#" * (width * done // max(total, 1))
        print(f"\r{table:<24} [{bar:<{width}}] {done}/{total}", end="\n" if done >= total else "", file=sys.stderr,
              flush=True)

    store = postgres_store(a.postgres, schema=a.schema) if a.postgres else None
    counts = migrate_cube(a.src, a.dst, store, progress)
    print(json.dumps(counts))


def cmd_demo(a: argparse.Namespace) -> None:
    from .demo import run

    run(Path(a.dir) if a.dir else None, local=a.local)


def cmd_keys(a: argparse.Namespace) -> None:
    from .mos import MOS
    from .storage.keys import KeyStore

    with MOS(a.home) as mos:
        keys = KeyStore.open(mos.home / "mos.db")
        try:
            if a.keys_command == "create":
                _ensure_user(mos, a.user)
                days = a.expires_days
                token, info = keys.create(a.user, agent_id=a.agent, label=a.label,
                                          expires_in=days * 86400 if days is not None else None)
                print(token)
                print(f"key {info.key_id} for user {info.user_id!r}" + (f", agent {info.agent_id!r}" if info.agent_id else "")
                      + (f", expires {info.to_dict()['expires_at']}" if info.expires_at else "")
                      + "; it is shown only now: keep it somewhere safe", file=sys.stderr)
            elif a.keys_command == "list":
                for k in keys.list_keys(a.user):
                    d = k.to_dict()
                    state = "active" if d["active"] else ("revoked" if d["revoked_at"] else "expired")
                    print(f"{k.key_id}  {state:<7}  user={k.user_id} agent={k.agent_id or '-'} "
                          f"created={d['created_at']} expires={d['expires_at'] or '-'} label={k.label or '-'}")
            elif not keys.revoke(a.key_id):
                raise InvalidInputError(f"no active key {a.key_id!r}; `memcube keys list --home {a.home}` shows them")
            else:
                print(f"revoked {a.key_id}")
        finally:
            keys.close()


def _ensure_user(mos: Any, user: str) -> None:
    """Sign ``user`` up as a plain user if MOS does not know them (anyone may sign up a new plain user)."""
    from .errors import UnknownUserError

    try:
        mos.list_users(user_id=user)
    except UnknownUserError:
        mos.create_user(user)
        print(f"created user {user!r}", file=sys.stderr)


def cmd_serve(a: argparse.Namespace) -> None:
    from .errors import require

    require("fastapi", "server")
    from .server import Limits, serve

    limits = Limits(rate=a.rate, burst=a.burst, max_body_bytes=a.max_body_bytes, cors_origins=tuple(a.cors_origin))
    if a.workers > 1:  # each worker builds its own chat model from the spec
        from .server.workers import serve_workers

        serve_workers(a.home, workers=a.workers, host=a.host, port=a.port, limits=limits, chat_model=a.chat_model,
                      cubes_on=a.cubes_on, log_level=a.log_level, query_precision=a.query_precision,
                      embed_process=a.embed_process)
        return
    model: Any = None
    if a.chat_model == "stand-in":
        from .langchain.standin import StandInChatModel

        model = StandInChatModel()
    elif a.chat_model:
        require("langchain.chat_models", "langchain")
        from langchain.chat_models import init_chat_model

        model = init_chat_model(a.chat_model)
    serve(a.home, host=a.host, port=a.port, limits=limits, chat_model=model, log_level=a.log_level,
          query_precision=a.query_precision, embed_process=a.embed_process)


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
    s.add_argument("--plan", default="balanced", choices=["fast", "balanced", "deep", "multihop", "learned", "late"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_search)
    for name, fn, helptext in (("show", cmd_show, "one memory as JSON"), ("history", cmd_history, "every version of a memory")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("cube")
        s.add_argument("id")
        s.set_defaults(fn=fn)
    s = sub.add_parser("export", help="every version and edge as JSONL (or --to mem0|memos CUBE DST)")
    s.add_argument("cube")
    s.add_argument("file")
    s.add_argument("--to", choices=["mem0", "memos"], help="write a mem0 export file or a MemOS cube directory")
    s.set_defaults(fn=cmd_export)
    s = sub.add_parser("import", help="load an export (lossless), or --from mem0|memos SRC CUBE")
    s.add_argument("cube", help="the cube (with --from: the mem0 file or MemOS directory to read)")
    s.add_argument("file", help="the export file (with --from: the cube to import into)")
    s.add_argument("--from", dest="source", choices=["mem0", "memos"], help="read a mem0 export or a MemOS cube directory")
    s.add_argument("--skip-pickles", action="store_true",
                   help="MemOS: import the text although the directory holds pickled memory (never loaded)")
    s.set_defaults(fn=cmd_import)
    s = sub.add_parser("mcp", help="serve a MOS home over MCP (stdio) as one user, for desktop clients")
    s.add_argument("--home", required=True, help="the MOS home directory")
    s.add_argument("--user", required=True, help="the user every tool call acts as")
    s.set_defaults(fn=cmd_mcp)
    s = sub.add_parser("stats", help="counts by state and kind")
    s.add_argument("cube")
    s.set_defaults(fn=cmd_stats)
    s = sub.add_parser("reindex", help="rebuild the vector index from SQLite")
    s.add_argument("cube")
    s.add_argument("--reembed", action="store_true", help="embed every item again")
    s.add_argument("--graph", action="store_true", help="rebuild the graph projection (neo4j) instead of the vectors")
    s.set_defaults(fn=cmd_reindex)
    s = sub.add_parser("keys", help="API keys of the memory service (create, list, revoke)")
    keys = s.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("create", help="print a new key once (its user is signed up if new)")
    k.add_argument("--home", required=True)
    k.add_argument("--user", required=True)
    k.add_argument("--agent", help="the one agent the key acts as")
    k.add_argument("--label")
    k.add_argument("--expires-days", type=float, help="the key stops working after this many days")
    k.set_defaults(fn=cmd_keys)
    k = keys.add_parser("list", help="every key (never the keys themselves)")
    k.add_argument("--home", required=True)
    k.add_argument("--user")
    k.set_defaults(fn=cmd_keys)
    k = keys.add_parser("revoke", help="stop a key working now")
    k.add_argument("--home", required=True)
    k.add_argument("key_id")
    k.set_defaults(fn=cmd_keys)
    s = sub.add_parser("serve", help="the memory service: REST and MCP over a MOS home (needs the [server] extra)")
    s.add_argument("--home", required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--chat-model", help="'stand-in' (offline test model) or an init_chat_model spec, e.g. openai:gpt-4.1")
    s.add_argument("--rate", type=float, default=50.0, help="requests per second per key (0: no limit)")
    s.add_argument("--burst", type=int, default=100)
    s.add_argument("--max-body-bytes", type=int, default=1 << 20)
    s.add_argument("--cors-origin", action="append", default=[], help="allow this browser origin (repeatable; none by default)")
    s.add_argument("--workers", type=int, default=1, help="worker processes (above 1: every cube must be server-backed)")
    s.add_argument("--cubes-on", help="with --workers: a PostgreSQL DSN for the cubes the service creates")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.add_argument("--query-precision", default="auto", choices=["auto", "int8", "fp32"],
                   help="how MiniLM embeds search queries: int8 (half the CPU where the CPU has int8 dot products; "
                        "stored vectors stay fp32), fp32, or auto (int8 where measured cheaper at start, else fp32)")
    s.add_argument("--embed-process", action=argparse.BooleanOptionalAction, default=None,
                   help="embed queries and single adds in a child process, off the server's GIL (default: on where "
                        "torch is installed)")
    s.set_defaults(fn=cmd_serve)
    s = sub.add_parser("organize", help="partitions, topic summaries, session episodes and links (incremental)")
    s.add_argument("cube")
    s.add_argument("--user", help="only this user's memories")
    s.add_argument("--full", action="store_true", help="redo every user, changed or not")
    s.set_defaults(fn=cmd_organize)
    s = sub.add_parser("migrate", help="copy a cube between SQLite and PostgreSQL (lossless, resumable)")
    s.add_argument("src", type=Path, help="the cube to copy (stop its writers first)")
    s.add_argument("dst", type=Path, help="the new cube's directory (run again to resume an interrupted copy)")
    s.add_argument("--postgres", metavar="DSN", help="put the copy's truth and vectors in PostgreSQL (default: "
                   "SQLite); the password comes from PGPASSWORD / ~/.pgpass, never the DSN")
    s.add_argument("--schema", help="the PostgreSQL schema for the copy (default: a new one)")
    s.set_defaults(fn=cmd_migrate)
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
