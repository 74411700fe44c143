"""``memcube serve`` with its embedding child, end to end: the child runs by default, a kill -9 of it
under concurrent searches gives each search a 200 or a 503 (never a 500, never a hang) and the service
recovers on a fresh child, and stopping the service leaves no child behind. About 30 s, so it lives
here (MEMOS_STRESS=1) rather than in the integration suite, whose tests/integration/test_embed_process.py
covers the same failures on the embedder itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytest.importorskip("torch")

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore  # noqa: E402
from tests.integration.conftest import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _embed_children(pid: int) -> list[int]:
    out = []
    for child in _children(pid):
        try:
            if b"embed_process" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
        except OSError:
            continue
    return out


def _serve(home: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "memos_integrations.cli", "serve", "--home", str(home), "--port",
                             str(port), "--rate", "0", "--log-level", "warning", *flags], cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, "memcube serve exited"
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "memcube serve did not answer in 120 s"
        time.sleep(0.2)


def test_memcube_serve_survives_its_embedding_child_and_leaves_none_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    mos = MOS(home)
    mos.create_user("alice")
    mos.close()
    keys = KeyStore.open(home / "mos.db")
    key, _ = keys.create("alice")
    keys.close()
    auth = {"Authorization": f"Bearer {key}"}

    proc, base = _serve(home)
    try:
        [child] = _embed_children(proc.pid)  # the default where torch is installed
        assert httpx.post(f"{base}/v1/memories", json={"text": "alice drinks genmaicha"}, headers=auth,
                          timeout=60).status_code == 201

        def search(i: int) -> int:
            return httpx.get(f"{base}/v1/memories/search", params={"q": f"what does alice drink {i}?"},
                             headers=auth, timeout=90).status_code

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(search, i) for i in range(60)]
            time.sleep(0.3)
            os.kill(child, signal.SIGKILL)
            codes = [f.result() for f in futures]
        assert set(codes) <= {200, 503}, codes
        assert [search(1000 + i) for i in range(5)] == [200] * 5  # a fresh child answers
        [fresh] = _embed_children(proc.pid)
        assert fresh != child
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while _alive(fresh):
        assert time.monotonic() < deadline, "the embedding child outlived memcube serve"
        time.sleep(0.1)

    proc, base = _serve(home, "--no-embed-process")
    try:
        assert _embed_children(proc.pid) == []
        assert httpx.get(f"{base}/v1/memories/search", params={"q": "tea"}, headers=auth, timeout=60).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
