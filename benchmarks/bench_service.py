"""The memory service under load: REST latency on loopback, from a second process, against the issue's targets.

Setup: a MOS home on the embedded default with ``--users`` users (50), each owning a LoCoMo-sized cube
(a copy of one of the five LoCoMo dev conversations, 369-680 turns, built once through the normal
message path and cloned per user), one API key each, served by uvicorn on 127.0.0.1 in this process.
Load: a second Python process sends requests on an open-loop schedule (a request is due every
1/rate s whether or not the earlier ones came back; latency counts from when it was due, so queueing
shows). Searches are LoCoMo questions of the user's own conversation (k=10); adds are single-memory
texts (fast mode, one embedding each).

Reported: search p95 at ``--search-rate`` (200/s) and add p95 at ``--add-rate`` (50/s), with errors;
the search rate at which p95 doubles over its unloaded value (one request at a time; a sweep of
rising rates stops at the first that doubles it); and the service's own
overhead, p50 of one HTTP search minus p50 of the same ``MOS`` search done directly (one at a time).
Rate limiting is off for the run unless ``--rate-limit`` turns it on (with a burst no run reaches) to measure its cost.

Every load row also gives the CPU one request cost the server (this process's CPU over the run: the in-process
server is all that runs here meanwhile) and the load generator (its own ``getrusage``), and the load average:
on a shared machine, CPU per request and the rate achieved at saturation say more than latency. Query
vectors are forgotten before each load run, so the unloaded baseline pays for its embeddings as the loaded
runs do. The server embeds concurrent searches' queries together (``textual/batching.py``, as ``memcube
serve`` does on a MiniLM home); ``--no-batch`` embeds each alone, for comparison. With ``--embed-process``
(``memcube serve``'s default where torch is installed) those batches run in a child process
(``textual/embed_process.py``), and the server's CPU per request counts the child's CPU too. The target
runs also split the server's CPU per request by thread (Linux): the event loop (HTTP, routing, the hop to a
worker thread), the route threads (access checks, the engine, JSON), the embedding batchers and the child.
``--no-fast-path`` serves the hot routes through FastAPI's full path (``server/fastpath.py``), for comparison.

    python -m benchmarks.bench_service                      # the issue's 30 s runs
    python -m benchmarks.bench_service --duration 5 --sweep-duration 4   # a short look
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from .common import locomo, pct, sessions, table, turn_messages


# -- the load process ---------------------------------------------------------------------------------
def _load(args: argparse.Namespace) -> None:
    """Send ``rate`` requests/s for ``duration`` s (or ``count`` one at a time); print latencies as JSON."""
    plan = json.loads(Path(args.plan).read_text())
    users = plan["users"]
    local = threading.local()
    rng = random.Random(7)
    where = urlsplit(plan["base"])

    def request(method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> int:
        """One request on this thread's keep-alive connection (stdlib http.client: the leanest client, so the
        load process takes as little CPU from the server it measures as it can); reconnects once if dropped."""
        for attempt in (0, 1):
            if not hasattr(local, "c"):
                local.c = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
            try:
                local.c.request(method, path, body=body, headers=headers)
                r = local.c.getresponse()
                r.read()
                return int(r.status)
            except (OSError, http.client.HTTPException):
                local.c.close()
                del local.c
                if attempt:
                    return 0
        return 0

    def one(due: float, n: int) -> tuple[float, int]:
        user = users[n % len(users)]
        headers = {"Authorization": f"Bearer {user['token']}"}
        if args.kind == "health":
            code = request("GET", "/healthz", {})
        elif args.kind == "search":
            q = user["questions"][n % len(user["questions"])]
            named = {"cube_id": user["cube"]} if "cube" in user else {}
            code = request("GET", "/v1/memories/search?" + urlencode({"q": q, "k": 10, **named}), headers)
        else:
            named = {"cube_id": user["cube"]} if "cube" in user else {}
            body = json.dumps({"text": f"{user['texts'][n % len(user['texts'])]} (note {n})", **named}).encode()
            code = request("POST", "/v1/memories", {**headers, "Content-Type": "application/json"}, body)
        return time.perf_counter() - due, code

    results: list[tuple[float, int]] = []
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if args.count:  # one at a time: no queueing, for the overhead comparison
        for n in range(args.count):
            results.append(one(time.perf_counter(), n))
    else:
        total = int(args.rate * args.duration)
        with ThreadPoolExecutor(max_workers=args.workers_load) as pool:
            futures = []
            for n in range(total):
                due = start + n / args.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(one, due, n + rng.randrange(1000)))
            results = [f.result() for f in futures]
    elapsed = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_SELF)
    lat = [r[0] for r in results]
    print(json.dumps({"n": len(results), "errors": sum(1 for r in results if r[1] not in (200, 201)),
                      "codes": sorted({r[1] for r in results}), "achieved": len(results) / elapsed,
                      "p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
                      "load_cpu": (used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime) / max(1, len(results))}))


def _row(label: str, seconds: str, res: dict[str, Any]) -> list[Any]:
    """A table row for one load run: latency, errors, and what a request cost each process in CPU (the
    server's is this process's CPU over the run; it reads ``-`` when the server is another process)."""
    server = res["server_cpu"] * 1e3 if res.get("server_cpu") is not None else "-"
    return [label, seconds, res["n"], res["achieved"] if seconds != "-" else "-", res["p50"] * 1e3, res["p95"] * 1e3,
            res["errors"], server, res["load_cpu"] * 1e3, f"{res['loadavg']:.1f}"]


#: the in-process server's embedding process (``--embed-process``), whose CPU is the server's too
_CHILD: list[Any] = []
#: the in-process server's search front (server/search_front.py), for its counts
_SEARCHES: list[Any] = []


def _server_cpu() -> float:
    """CPU seconds of the in-process server so far: this process's, plus its embedding child's."""
    return time.process_time() + sum(child.cpu_seconds() for child in _CHILD)


#: the in-process server's long-lived threads, by name prefix, as the CPU breakdown groups them
_THREAD_GROUPS = (("uvicorn-loop", "event loop"), ("query-batcher", "batchers"), ("memos-index-drain", "index drain"),
                  ("memos-search", "search threads"))


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process's long-lived threads, by thread id (Linux: /proc/self/task; elsewhere
    empty). Why: a request's CPU splits between the event loop (HTTP, routing, the thread hop), the worker
    threads (the route: access checks, the engine, JSON), the embedding batchers and the child, and only that
    split says which part to make cheaper. Worker threads come and go (AnyIO ends idle ones), so their share
    is the process's CPU less the long-lived threads', never a sum over threads that may have ended."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    tick = os.sysconf("SC_CLK_TCK")
    for tid in tids:
        group = next((g for prefix, g in _THREAD_GROUPS if names.get(int(tid), "").startswith(prefix)), None)
        if group is None:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        out[int(tid)] = (group, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _split_cpu(before: dict[int, tuple[str, float]], process_s: float, child_s: float) -> dict[str, float]:
    """CPU seconds by group since ``before``: the long-lived threads', the embedding child's, and the rest of this
    process (``process_s``: its CPU over the same time), which is the route threads' and the HTTP machinery's
    outside the event loop."""
    out: dict[str, float] = {}
    for tid, (group, cpu) in _thread_cpu().items():
        out[group] = out.get(group, 0.0) + cpu - before.get(tid, (group, 0.0))[1]
    out["route threads and the rest"] = process_s - sum(out.values())
    if _CHILD:
        out["embedding child"] = child_s
    return out


def _stages_start(mos: Any) -> dict[str, Any]:
    """Start recording where each search's wall time goes (search_front / batching timings; in-process server)."""
    batcher = getattr(mos.embedder, "batcher", None)
    for front in _SEARCHES:
        front.timings = []
    if batcher is not None:
        batcher.timings = []
    return {"child": [(c.requests, c.child_busy_s) for c in _CHILD],
            "calls": (batcher.calls, batcher.busy_s) if batcher is not None else (0, 0.0)}


def _stages(label: str, mos: Any, before: dict[str, Any]) -> str:
    """One line: each stage of a search embedded ahead, p50 / p95 ms (stages are each their own percentiles)."""
    batcher = getattr(mos.embedder, "batcher", None)
    rows = [t for front in _SEARCHES for t in (front.timings or [])]
    for front in _SEARCHES:
        front.timings = None
    if not rows:
        return f"  {label}: no search embedded ahead"

    def cell(values: list[float]) -> str:
        return f"{pct(values, 50) * 1e3:.2f} / {pct(values, 95) * 1e3:.2f}"

    names = ("key", "checks first", "embedding", "to a search thread", "route", "back on the loop")
    parts = [f"{name} {cell([r[i] for r in rows])}" for i, name in enumerate(names)]
    parts.append(f"total {cell([sum(r) for r in rows])}")
    line = f"  {label} ({len(rows)} searches): " + ", ".join(parts)
    if batcher is not None and batcher.timings:
        emb = batcher.timings
        batcher.timings = None
        calls = batcher.calls - before["calls"][0]
        per_call = (batcher.busy_s - before["calls"][1]) / calls * 1e3 if calls else 0.0
        line += (f"\n    embedding: queued {cell([e[0] for e in emb])}, in its call {cell([e[1] for e in emb])}, "
                 f"until its coroutine ran {cell([e[2] for e in emb])}; {calls} calls, "
                 f"{per_call:.2f} ms wall per call")
        for (requests, busy), child in zip(before["child"], _CHILD, strict=True):
            if child.requests > requests:
                line += f", {(child.child_busy_s - busy) / (child.requests - requests) * 1e3:.2f} ms of it computing in the child"
    return line


def _run_load(plan: Path, kind: str, *, rate: float = 0, duration: float = 0, count: int = 0,
              server_here: bool = True) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_service", "--load", "--plan", str(plan), "--kind", kind,
           "--rate", str(rate), "--duration", str(duration), "--count", str(count)]
    cpu = _server_cpu()
    threads, process, child = _thread_cpu(), time.process_time(), _server_cpu() - time.process_time()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    found: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    # this process's CPU (and its embedding child's) while the load ran: the in-process server's
    found["server_cpu"] = (_server_cpu() - cpu) / max(1, found["n"]) if server_here else None
    if server_here:
        split = _split_cpu(threads, time.process_time() - process, _server_cpu() - time.process_time() - child)
        found["threads"] = {g: v / max(1, found["n"]) for g, v in split.items()}
    found["loadavg"] = os.getloadavg()[0]
    return found


def _split(label: str, res: dict[str, Any]) -> str:
    """One line of the server's CPU per request by thread group (ms), largest first."""
    parts = sorted(res.get("threads", {}).items(), key=lambda kv: -kv[1])
    return f"  {label}: " + ", ".join(f"{g} {v * 1e3:.2f}" for g, v in parts if v > 0)


# -- the server side ----------------------------------------------------------------------------------
def _build(home: Path, n_users: int, embedder: Any) -> tuple[Any, list[dict[str, Any]], float]:
    from memos_integrations import MemCube
    from memos_integrations.mos import MOS
    from memos_integrations.storage.keys import KeyStore

    convs = locomo()
    start = time.perf_counter()
    templates = []
    for conv in convs:
        cube = MemCube.create(home / "templates" / conv["sample_id"], embedder=embedder)
        for key, when, turns in sessions(conv):
            cube.add(messages=turn_messages(turns), user_id="template", session_id=key, timestamp=when)
        templates.append(cube)
    mos = MOS(home, embedder=embedder)
    keys = KeyStore.open(home / "mos.db")
    users = []
    for i in range(n_users):
        user = f"u{i:02d}"
        conv = convs[i % len(convs)]
        mos.create_user(user)
        path = home / "cubes" / f"{user}_default"
        templates[i % len(templates)].clone(path, cube_id=f"{user}_default").close()
        mos.register_mem_cube(path, user_id=user, mem_cube_id=f"{user}_default")
        token, _ = keys.create(user)
        questions = [q["question"] for q in conv["qa"] if q.get("category") != 5]
        texts = [t["text"] for _, _, turns in sessions(conv) for t in turns][:200]
        users.append({"user": user, "token": token, "questions": questions, "texts": texts})
    for cube in templates:
        cube.close()
    keys.close()
    return mos, users, time.perf_counter() - start


def _build_pg(home: Path, n_users: int, embedder: Any, dsn: str) -> tuple[Any, list[dict[str, Any]], float]:
    """The PostgreSQL variant: one LoCoMo cube per conversation in its own schema (truth and pgvector vectors
    on the server), owned by ``owner`` and shared for writing with the users (ten per cube for 50 users),
    who name it in every request. A request's work is what it is on the embedded home (the same cube
    sizes, the same queries); what differs is that the truth and the vectors live in PostgreSQL."""
    from memos_integrations import CubeConfig, MemCube
    from memos_integrations.config import postgres_store
    from memos_integrations.mos import MOS
    from memos_integrations.storage.keys import KeyStore

    convs = locomo()
    start = time.perf_counter()
    mos = MOS(home, embedder=embedder)
    mos.create_user("owner")
    cube_ids = []
    for conv in convs:
        cube_id = f"c_{conv['sample_id'].replace('-', '_').lower()}"
        config = CubeConfig(store=postgres_store(dsn, schema=cube_id, max_size=3))
        cube = MemCube.create(home / "cubes" / cube_id, config, embedder=embedder)
        for key, when, turns in sessions(conv):
            cube.add(messages=turn_messages(turns), user_id="template", session_id=key, timestamp=when)
        mos.register_mem_cube(cube, user_id="owner", mem_cube_id=cube_id)
        cube_ids.append(cube_id)
    keys = KeyStore.open(home / "mos.db")
    users = []
    for i in range(n_users):
        user = f"u{i:02d}"
        conv = convs[i % len(convs)]
        mos.create_user(user)
        mos.share_cube_with_user(cube_ids[i % len(convs)], user, "write", user_id="owner")
        token, _ = keys.create(user)
        questions = [q["question"] for q in conv["qa"] if q.get("category") != 5]
        texts = [t["text"] for _, _, turns in sessions(conv) for t in turns][:200]
        users.append({"user": user, "token": token, "cube": cube_ids[i % len(convs)], "questions": questions,
                      "texts": texts})
    keys.close()
    return mos, users, time.perf_counter() - start


def _postgres(root: Path) -> tuple[Any, str]:
    """A pgserver PostgreSQL 16 (with pgvector) whose data lives in ``root/pg`` (kept for the next run)."""
    import pgserver

    server = pgserver.get_server(str(root / "pg"), cleanup_mode="stop")
    server.psql("CREATE EXTENSION IF NOT EXISTS vector;")
    return server, server.get_uri()


def _open_or_build(root: Path, n_users: int, embedder: Any, dsn: str | None = None) -> tuple[Any, list[dict[str, Any]], str]:
    """The MOS home under ``root`` with its users: reused when ``root/users.json`` says it holds as many."""
    from memos_integrations.mos import MOS

    saved = root / "users.json"
    if saved.exists():
        users = json.loads(saved.read_text())
        if len(users) == n_users:
            return MOS(root / "home", embedder=embedder), users, "reused"
    if dsn is not None:
        mos, users, build_s = _build_pg(root / "home", n_users, embedder, dsn)
    else:
        mos, users, build_s = _build(root / "home", n_users, embedder)
    saved.write_text(json.dumps(users))
    return mos, users, f"built in {build_s:.0f} s"


def _overhead(mos: Any, users: list[dict[str, Any]], plan: Path, n: int, repeats: int,
              rows: list[list[Any]]) -> dict[str, float]:
    """The service's own cost over a direct ``CubeView.search``, the same queries one at a time, interleaved
    (direct pass, HTTP pass, direct pass, ...) so a shared machine's drift hits both alike; medians over
    ``repeats``. Wall p50 is what a client sees; CPU is this process's CPU time per request (the server
    runs here and nothing else does during an HTTP pass), which other processes' load disturbs far less."""
    def direct_pass() -> tuple[list[float], float]:
        out: list[float] = []
        cpu = _server_cpu()
        for i in range(n):
            u = users[i % len(users)]
            view = mos.cube(u.get("cube", f"{u['user']}_default"), user_id=u["user"])
            t = time.perf_counter()
            view.search(u["questions"][i % len(u["questions"])], top_k=10)
            out.append(time.perf_counter() - t)
        return out, (_server_cpu() - cpu) / n

    direct_pass()
    d50, h50, dcpu, hcpu, hz50, hzcpu = [], [], [], [], [], []
    for _ in range(repeats):
        lat, cpu = direct_pass()
        d50.append(pct(lat, 50))
        dcpu.append(cpu)
        c = _server_cpu()
        http = _run_load(plan, "search", count=n)
        hcpu.append((_server_cpu() - c) / n)
        h50.append(http["p50"])
        c = _server_cpu()
        health = _run_load(plan, "health", count=n)
        hzcpu.append((_server_cpu() - c) / n)
        hz50.append(health["p50"])
    med = statistics.median
    found = {"direct_p50": med(d50), "http_p50": med(h50), "health_p50": med(hz50),
             "direct_cpu": med(dcpu), "http_cpu": med(hcpu), "health_cpu": med(hzcpu)}
    rows.append([f"search, direct MOS (1 at a time; median of {repeats} p50s)", "-", n * repeats, "-",
                 found["direct_p50"] * 1e3, found["direct_cpu"] * 1e3, 0, "-", "-", f"{os.getloadavg()[0]:.1f}"])
    rows.append([f"search, HTTP (1 at a time; median of {repeats} p50s)", "-", n * repeats, "-",
                 found["http_p50"] * 1e3, found["http_cpu"] * 1e3, 0, "-", "-", f"{os.getloadavg()[0]:.1f}"])
    rows.append([f"GET /healthz (1 at a time; median of {repeats} p50s)", "-", n * repeats, "-",
                 found["health_p50"] * 1e3, found["health_cpu"] * 1e3, 0, "-", "-", f"{os.getloadavg()[0]:.1f}"])
    return found


def _serve_in_thread(mos: Any, keys: Any, rate: float = 0, fast_path: bool = True, search_threads: int | None = None,
                     embed_ahead: bool = True) -> tuple[Any, threading.Thread, int]:
    import uvicorn

    from memos_integrations.server import Limits, create_app
    from tests.integration.conftest import free_port

    port = free_port()
    limits = Limits(rate=rate, burst=1_000_000)  # rate > 0: the shared buckets' cost is measured, never a 429
    from memos_integrations.server.search_front import SEARCH_THREADS

    app = create_app(mos, keys=keys, limits=limits, mcp=False, fast_path=fast_path,
                     search_threads=SEARCH_THREADS if search_threads is None else search_threads)
    if not embed_ahead and fast_path:
        app.state.searches.embedder = None  # the route embeds the query in its worker thread (the older way)
    _SEARCHES[:] = [app.state.searches] if fast_path else []
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-loop", daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, port


def _serve_workers(home: Path, workers: int, embed_process: bool) -> tuple[subprocess.Popen[bytes], int]:
    """``memcube serve --workers N`` in its own process group (rate limits off), once it answers."""
    import httpx

    from tests.integration.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "memos_integrations.cli", "serve", "--home", str(home), "--port",
                             str(port), "--workers", str(workers), "--rate", "0", "--log-level", "warning",
                             "--embed-process" if embed_process else "--no-embed-process"],
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"memcube serve exited with {proc.returncode}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("memcube serve did not answer /readyz within 300 s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--duration", type=float, default=30.0, help="seconds per target run (the issue asks for 30)")
    p.add_argument("--search-rate", type=float, default=200.0)
    p.add_argument("--add-rate", type=float, default=50.0)
    p.add_argument("--sweep", default="10,20,40,80,160,320", help="search rates (req/s) for the p95-doubling sweep")
    p.add_argument("--sweep-duration", type=float, default=15.0)
    p.add_argument("--overhead-n", type=int, default=100, help="sequential searches per overhead pass")
    p.add_argument("--overhead-repeats", type=int, default=5, help="interleaved direct/HTTP passes (medians)")
    p.add_argument("--only", choices=["all", "overhead", "load", "add"], default="all",
                   help="add: only the add run at --add-rate (the add path's A/B loop)")
    p.add_argument("--workers", type=int, default=0,
                   help="serve with `memcube serve --workers N` in a separate process (0: uvicorn in this process)")
    p.add_argument("--backend", choices=["embedded", "postgres"], default="embedded",
                   help="postgres: the cubes' truth and vectors in a pgserver PostgreSQL (kept under --home)")
    p.add_argument("--rate-limit", type=float, default=0,
                   help="turn per-key rate limiting on at this rate (with a burst no run reaches), to measure its cost")
    p.add_argument("--no-batch", action="store_true", help="embed each query alone (no micro-batching), for comparison")
    p.add_argument("--query-precision", choices=["int8", "fp32"], default="int8",
                   help="how queries are embedded (memcube serve's default is int8)")
    p.add_argument("--embed-process", action=argparse.BooleanOptionalAction, default=None,
                   help="embed the batched queries in a child process (default: memcube serve's, on where torch is)")
    p.add_argument("--fast-path", action=argparse.BooleanOptionalAction, default=True,
                   help="the search and add routes' fast fronts (server/fastpath.py); --no-fast-path measures without")
    p.add_argument("--search-threads", type=int, default=None,
                   help="the search fronts' own worker threads (default: create_app's; 0: AnyIO's pool)")
    p.add_argument("--embed-ahead", action=argparse.BooleanOptionalAction, default=True,
                   help="embed a search's query on the event loop before its route (server/search_front.py)")
    p.add_argument("--gc-settle", action=argparse.BooleanOptionalAction, default=True,
                   help="freeze the cubes' objects out of full GC passes as memcube serve does (server/gc_settle.py)")
    p.add_argument("--home", help="keep the MOS home here and reuse it on the next run (default: a temporary directory)")
    # the load process's own flags
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    p.add_argument("--kind", default="search", help=argparse.SUPPRESS)
    p.add_argument("--rate", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--load-threads", dest="workers_load", type=int, default=128, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.load:
        _load(args)
        return 0

    from memos_integrations.server import KeyStore
    from memos_integrations.server.service import embed_process_default
    from memos_integrations.textual.embed import MiniLMEmbedder

    if args.embed_process is None:
        args.embed_process = embed_process_default()
    root = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bench-service-"))
    root.mkdir(parents=True, exist_ok=True)
    embedder = MiniLMEmbedder(query_precision=args.query_precision)
    if not args.no_batch:
        from memos_integrations.textual.batching import batched

        child = None
        if args.embed_process and not args.workers:
            from memos_integrations.textual.embed_process import EmbedProcess

            child = EmbedProcess.like(embedder)
            child.start()
            _CHILD.append(child)
        embedder = batched(embedder, process=child)  # what `memcube serve` does for a MiniLM home
    pg = None
    dsn = None
    if args.backend == "postgres":
        pg, dsn = _postgres(root)
    mos, users, how = _open_or_build(root, args.users, embedder, dsn)
    items = mos.cube(users[0].get("cube", users[0]["user"] + "_default"), user_id=users[0]["user"]).stats()["items"]
    print(f"{args.users} users' cubes ({items}+ items each, LoCoMo): {how}", flush=True)

    server = thread = proc = None
    keys = KeyStore.open(root / "home" / "mos.db")
    if args.workers:
        if dsn is None:
            mos.close()  # embedded cubes are held by one process at a time: the workers open them
        proc, port = _serve_workers(root / "home", args.workers, args.embed_process)
    else:
        if args.gc_settle:
            from memos_integrations.server import gc_settle

            gc_settle.install(mos)
        server, thread, port = _serve_in_thread(mos, keys, args.rate_limit, args.fast_path, args.search_threads,
                                                args.embed_ahead)
    plan = root / "plan.json"
    plan.write_text(json.dumps({"base": f"http://127.0.0.1:{port}", "users": users}))

    # warm every cube (open it, load its vectors) the way the first request would
    if args.workers:
        for _ in range(2 * args.workers):
            _run_load(plan, "search", count=len(users))
    if not args.workers or dsn is not None:
        for u in users:
            mos.search("warm up", user_id=u["user"], top_k=10)

    def cold() -> None:
        """Forget cached query vectors (in-process server): every run starts with its queries unembedded,
        so the unloaded baseline pays for its embeddings as the loaded runs do (repeats within a run still hit)."""
        clear = getattr(mos.embedder, "clear_query_cache", None)
        if clear is not None and not args.workers:
            clear()

    rows: list[list[Any]] = []
    splits: list[str] = []
    stages: list[str] = []  # where a search's wall time goes, by run (in-process server)
    base_p95 = None
    if args.only in ("all", "overhead") and not args.workers:  # CPU is counted in this process: in-process server only
        found = _overhead(mos, users, plan, args.overhead_n, args.overhead_repeats, rows)
    if args.only == "add":
        target_add = _run_load(plan, "add", server_here=not args.workers, rate=args.add_rate, duration=args.duration)
        rows.append(_row(f"add (fast) at {args.add_rate:g}/s", f"{args.duration:g}", target_add))
        splits.append(_split(f"add (fast) at {args.add_rate:g}/s", target_add))
        print(f"add p95 at {args.add_rate:g}/s: {target_add['p95'] * 1e3:.0f} ms (target <= 100 ms), "
              f"p99 {target_add['p99'] * 1e3:.0f} ms, errors {target_add['errors']} {target_add['codes']}")
    if args.only in ("all", "load"):
        cold()
        unloaded = _run_load(plan, "search", count=args.overhead_n, server_here=not args.workers)
        base_p95 = unloaded["p95"]
        rows.append(_row("search, HTTP (1 at a time: the unloaded p95)", "-", unloaded))
        cold()
        marks = _stages_start(mos)
        target_search = _run_load(plan, "search", server_here=not args.workers, rate=args.search_rate, duration=args.duration)
        rows.append(_row(f"search at {args.search_rate:g}/s", f"{args.duration:g}", target_search))
        splits.append(_split(f"search at {args.search_rate:g}/s", target_search))
        stages.append(_stages(f"search at {args.search_rate:g}/s", mos, marks))
        target_add = _run_load(plan, "add", server_here=not args.workers, rate=args.add_rate, duration=args.duration)
        rows.append(_row(f"add (fast) at {args.add_rate:g}/s", f"{args.duration:g}", target_add))
        splits.append(_split(f"add (fast) at {args.add_rate:g}/s", target_add))
        # the rate at which p95 doubles over its unloaded value (one request at a time)
        doubled = None
        for rate in [float(r) for r in args.sweep.split(",") if r]:
            cold()
            marks = _stages_start(mos)
            res = _run_load(plan, "search", server_here=not args.workers, rate=rate, duration=args.sweep_duration)
            rows.append(_row(f"sweep: search at {rate:g}/s", f"{args.sweep_duration:g}", res))
            stages.append(_stages(f"sweep: search at {rate:g}/s", mos, marks))
            if res["p95"] >= 2 * base_p95:
                doubled = rate
                break

    print(table(["run", "s", "requests", "achieved req/s", "p50 ms", "p95 ms (overhead rows: CPU ms/request)",
                 "errors", "server CPU ms/req", "load CPU ms/req", "load avg"], rows))
    if any(splits) and not args.workers:
        print("\nserver CPU per request by thread, ms (event loop: HTTP, routing, the hop to a thread; route threads: "
              "access checks, the engine, JSON; batchers and child: the embeddings):")
        print("\n".join(splits))
    if any(stages) and not args.workers:
        print("\nwhere a search's wall time goes (searches embedded ahead; each stage its own p50 / p95, ms): the key "
              "(and rate token), the route's checks first (search_front.two_step), the query embedding (awaited on the "
              "loop), the wait for a search thread, the route on it, the answer back on the loop:")
        print("\n".join(stages))
    if args.only in ("all", "overhead") and not args.workers:  # CPU is counted in this process: in-process server only
        print(f"\nservice overhead (HTTP + auth + JSON), p50: {(found['http_p50'] - found['direct_p50']) * 1e3:.2f} ms "
              f"wall, {(found['http_cpu'] - found['direct_cpu']) * 1e3:.2f} ms CPU per request (target <= 3 ms)")
    if base_p95 is not None:
        print(f"search p95 at {args.search_rate:g}/s: {target_search['p95'] * 1e3:.0f} ms (target <= 50 ms), "
              f"errors {target_search['errors']}; add p95 at {args.add_rate:g}/s: {target_add['p95'] * 1e3:.0f} ms "
              f"(target <= 100 ms), errors {target_add['errors']}")
        print(f"search p95 doubles (over {base_p95 * 1e3:.0f} ms, one request at a time) at: "
              f"{f'{doubled:g} req/s' if doubled else 'not within the sweep'}")
    print(f"cubes: {args.backend}; server: {f'memcube serve --workers {args.workers}' if args.workers else 'uvicorn in this process'}; "
          f"embed process: {'on' if args.embed_process and not args.no_batch else 'off'} (server CPU counts it); "
          f"query precision: {args.query_precision}; fast path: {'on' if args.fast_path else 'off'}; machine: {os.cpu_count()} CPUs as seen by Python; server and load share them; load average "
          f"{os.getloadavg()[0]:.1f}")
    batcher = getattr(mos.embedder, "batcher", None)
    if batcher is not None and batcher.calls:
        print(f"query embeddings: {batcher.texts} in {batcher.calls} calls ({batcher.texts / batcher.calls:.1f} per call, "
              f"{batcher.busy_s / batcher.calls * 1e3:.1f} ms wall per call; concurrent searches share one forward pass)")
    for front in _SEARCHES:
        print(f"search front: {front.embedded_ahead} queries embedded on the event loop before the route, "
              f"{front.embedded_in_route} in the route ({front.checked_first} after the route's checks ran first; "
              f"{front.not_embedded} answered without a search); {front.threads or 'AnyIO'} search threads")
    for child in _CHILD:
        if child.requests:
            print(f"embedding process: {child.requests} calls (queries and adds), {child.child_busy_s / child.requests * 1e3:.1f} "
                  f"ms wall per call inside the child, {child.cpu_seconds():.1f} s CPU, started {child.starts}x")
    if server is not None and thread is not None:
        server.should_exit = True
        thread.join(timeout=30)
    if proc is not None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    keys.close()
    mos.close()
    if hasattr(embedder, "close"):
        embedder.close()  # stops the embedding process
    if pg is not None:
        pg.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
