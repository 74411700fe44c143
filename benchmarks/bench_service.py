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
Rate limiting is off for the run (one key per user, and the limits are what is measured here).

    python -m benchmarks.bench_service                      # the issue's 30 s runs
    python -m benchmarks.bench_service --duration 5 --sweep-duration 4   # a short look
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
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
            code = request("GET", "/v1/memories/search?" + urlencode({"q": q, "k": 10}), headers)
        else:
            body = json.dumps({"text": f"{user['texts'][n % len(user['texts'])]} (note {n})"}).encode()
            code = request("POST", "/v1/memories", {**headers, "Content-Type": "application/json"}, body)
        return time.perf_counter() - due, code

    results: list[tuple[float, int]] = []
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
    lat = [r[0] for r in results]
    print(json.dumps({"n": len(results), "errors": sum(1 for r in results if r[1] not in (200, 201)),
                      "codes": sorted({r[1] for r in results}), "achieved": len(results) / elapsed,
                      "p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99)}))


def _run_load(plan: Path, kind: str, *, rate: float = 0, duration: float = 0, count: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.bench_service", "--load", "--plan", str(plan), "--kind", kind,
           "--rate", str(rate), "--duration", str(duration), "--count", str(count)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


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


def _open_or_build(root: Path, n_users: int, embedder: Any) -> tuple[Any, list[dict[str, Any]], str]:
    """The MOS home under ``root`` with its users: reused when ``root/users.json`` says it holds as many."""
    from memos_integrations.mos import MOS

    saved = root / "users.json"
    if saved.exists():
        users = json.loads(saved.read_text())
        if len(users) == n_users:
            return MOS(root / "home", embedder=embedder), users, "reused"
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
        cpu = time.process_time()
        for i in range(n):
            u = users[i % len(users)]
            view = mos.cube(f"{u['user']}_default", user_id=u["user"])
            t = time.perf_counter()
            view.search(u["questions"][i % len(u["questions"])], top_k=10)
            out.append(time.perf_counter() - t)
        return out, (time.process_time() - cpu) / n

    direct_pass()
    d50, h50, dcpu, hcpu, hz50, hzcpu = [], [], [], [], [], []
    for _ in range(repeats):
        lat, cpu = direct_pass()
        d50.append(pct(lat, 50))
        dcpu.append(cpu)
        c = time.process_time()
        http = _run_load(plan, "search", count=n)
        hcpu.append((time.process_time() - c) / n)
        h50.append(http["p50"])
        c = time.process_time()
        health = _run_load(plan, "health", count=n)
        hzcpu.append((time.process_time() - c) / n)
        hz50.append(health["p50"])
    med = statistics.median
    found = {"direct_p50": med(d50), "http_p50": med(h50), "health_p50": med(hz50),
             "direct_cpu": med(dcpu), "http_cpu": med(hcpu), "health_cpu": med(hzcpu)}
    rows.append([f"search, direct MOS (1 at a time; median of {repeats} p50s)", "-", n * repeats, "-",
                 found["direct_p50"] * 1e3, found["direct_cpu"] * 1e3, 0])
    rows.append([f"search, HTTP (1 at a time; median of {repeats} p50s)", "-", n * repeats, "-",
                 found["http_p50"] * 1e3, found["http_cpu"] * 1e3, 0])
    rows.append([f"GET /healthz (1 at a time; median of {repeats} p50s)", "-", n * repeats, "-",
                 found["health_p50"] * 1e3, found["health_cpu"] * 1e3, 0])
    return found


def _serve_in_thread(mos: Any, keys: Any) -> tuple[Any, threading.Thread, int]:
    import uvicorn

    from memos_integrations.server import Limits, create_app
    from tests.integration.conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, port


def _serve_workers(home: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    """``memcube serve --workers N`` in its own process group (rate limits off), once it answers."""
    import httpx

    from tests.integration.conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "memos_integrations.cli", "serve", "--home", str(home), "--port",
                             str(port), "--workers", str(workers), "--rate", "0", "--log-level", "warning"],
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
    p.add_argument("--only", choices=["all", "overhead", "load"], default="all")
    p.add_argument("--workers", type=int, default=0,
                   help="serve with `memcube serve --workers N` in a separate process (0: uvicorn in this process)")
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
    from memos_integrations.textual.embed import MiniLMEmbedder

    root = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="bench-service-"))
    root.mkdir(parents=True, exist_ok=True)
    embedder = MiniLMEmbedder()
    mos, users, how = _open_or_build(root, args.users, embedder)
    items = mos.cube(users[0]["user"] + "_default", user_id=users[0]["user"]).stats()["items"]
    print(f"{args.users} users' cubes ({items}+ items each, LoCoMo): {how}", flush=True)

    server = thread = proc = None
    keys = KeyStore.open(root / "home" / "mos.db")
    if args.workers:
        mos.close()  # embedded cubes are held by one process at a time: the workers open them
        proc, port = _serve_workers(root / "home", args.workers)
    else:
        server, thread, port = _serve_in_thread(mos, keys)
    plan = root / "plan.json"
    plan.write_text(json.dumps({"base": f"http://127.0.0.1:{port}", "users": users}))

    # warm every cube (open it, load its vectors) the way the first request would
    if args.workers:
        for _ in range(2 * args.workers):
            _run_load(plan, "search", count=len(users))
    else:
        for u in users:
            mos.search("warm up", user_id=u["user"], top_k=10)

    rows: list[list[Any]] = []
    base_p95 = None
    if args.only in ("all", "overhead") and not args.workers:
        found = _overhead(mos, users, plan, args.overhead_n, args.overhead_repeats, rows)
    if args.only in ("all", "load"):
        unloaded = _run_load(plan, "search", count=args.overhead_n)
        base_p95 = unloaded["p95"]
        rows.append(["search, HTTP (1 at a time: the unloaded p95)", "-", unloaded["n"], "-", unloaded["p50"] * 1e3,
                     "-", unloaded["errors"]])
        target_search = _run_load(plan, "search", rate=args.search_rate, duration=args.duration)
        rows.append([f"search at {args.search_rate:g}/s", f"{args.duration:g}", target_search["n"], target_search["achieved"],
                     target_search["p50"] * 1e3, target_search["p95"] * 1e3, target_search["errors"]])
        target_add = _run_load(plan, "add", rate=args.add_rate, duration=args.duration)
        rows.append([f"add (fast) at {args.add_rate:g}/s", f"{args.duration:g}", target_add["n"], target_add["achieved"],
                     target_add["p50"] * 1e3, target_add["p95"] * 1e3, target_add["errors"]])
        # the rate at which p95 doubles over its unloaded value (one request at a time)
        doubled = None
        for rate in [float(r) for r in args.sweep.split(",") if r]:
            res = _run_load(plan, "search", rate=rate, duration=args.sweep_duration)
            rows.append([f"sweep: search at {rate:g}/s", f"{args.sweep_duration:g}", res["n"], res["achieved"],
                         res["p50"] * 1e3, res["p95"] * 1e3, res["errors"]])
            if res["p95"] >= 2 * base_p95:
                doubled = rate
                break

    print(table(["run", "s", "requests", "achieved req/s", "p50 ms", "p95 ms (overhead rows: CPU ms/request)",
                 "errors"], rows))
    if args.only in ("all", "overhead") and not args.workers:
        print(f"\nservice overhead (HTTP + auth + JSON), p50: {(found['http_p50'] - found['direct_p50']) * 1e3:.2f} ms "
              f"wall, {(found['http_cpu'] - found['direct_cpu']) * 1e3:.2f} ms CPU per request (target <= 3 ms)")
    if base_p95 is not None:
        print(f"search p95 at {args.search_rate:g}/s: {target_search['p95'] * 1e3:.0f} ms (target <= 50 ms), "
              f"errors {target_search['errors']}; add p95 at {args.add_rate:g}/s: {target_add['p95'] * 1e3:.0f} ms "
              f"(target <= 100 ms), errors {target_add['errors']}")
        print(f"search p95 doubles (over {base_p95 * 1e3:.0f} ms, one request at a time) at: "
              f"{f'{doubled:g} req/s' if doubled else 'not within the sweep'}")
    print(f"server: {f'memcube serve --workers {args.workers}' if args.workers else 'uvicorn in this process'}; "
          f"machine: {os.cpu_count()} CPUs as seen by Python; server and load share them; load average "
          f"{os.getloadavg()[0]:.1f}")
    if server is not None and thread is not None:
        server.should_exit = True
        thread.join(timeout=30)
    if proc is not None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    keys.close()
    mos.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
