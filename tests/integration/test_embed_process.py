"""The service's embeddings in a child process (textual/embed_process.py): the same bits as in-process,
each caller its own row, and every way the child can fail (killed, hung, lying, never started) is a
MemosError for the calls it touches, never a hang, never an orphan. One real child per module (the
served embedder's); the hung and lying children are small scripts speaking the same protocol."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from memos_integrations.errors import BackendError, InvalidInputError, MemosError  # noqa: E402
from memos_integrations.server.service import embed_process_default, serving_embedder  # noqa: E402
from memos_integrations.textual.batching import BatchedEmbedder, QueryBatcher  # noqa: E402
from memos_integrations.textual.embed import MiniLMEmbedder  # noqa: E402
from memos_integrations.textual.embed_process import EmbedProcess, EmbedProcessError, decode_reply  # noqa: E402
from tests.int8_exact import exact_int_mm  # noqa: E402
from tests.integration.stand_in_child import PREAMBLE  # noqa: E402

QUERIES = ["what did Melanie paint after the camping trip?", "hello", "",
           "a longer question about the lake, the dog, the pottery class and the July 2023 parade"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None, embedder: Any) -> Iterator[Any]:
    """What ``memcube serve`` builds for a new home, with its child process."""
    e = serving_embedder(tmp_path_factory.mktemp("home"), "int8", embed_process=True)
    yield e
    e.close()


def test_serve_embeds_in_a_child_by_default_where_torch_is(served: Any) -> None:
    from memos_integrations.cli import parser

    assert embed_process_default()  # torch is installed here
    assert parser().parse_args(["serve", "--home", "h"]).embed_process is None  # None: the default above
    assert parser().parse_args(["serve", "--home", "h", "--no-embed-process"]).embed_process is False
    assert isinstance(served, BatchedEmbedder) and served.process is not None
    assert served.process.threads == 1  # small batches: a second OpenMP thread only doubles the CPU
    assert served.batcher._embed_many == served.process.embed_queries  # the batches go to the child
    # one-text adds go to the child with their token vectors (server/late_embed.py: LateBatched._documents)
    assert served.doc_batcher is not None and served.doc_batcher._embed_many == served._documents
    pid = served.process.pid
    assert pid is not None and _alive(pid) and served.process.info["precision_in_use"] == "int8"
    assert f"{os.getpid()}" == Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]  # our child (ppid)
    before = served.process.requests
    served.clear_query_cache()
    served.embed_query("which tea does alice like?")
    served.embed_documents(["alice likes genmaicha"])  # one-text adds go through the child too
    assert served.process.requests == before + 2
    os.kill(pid, signal.SIGTERM)  # a kill of the process group: the child keeps serving until its parent closes it
    served.clear_query_cache()
    served.embed_query("and which coffee?")
    assert served.process.pid == pid


def test_the_child_computes_the_in_process_bits(served: Any, embedder: Any) -> None:
    int8, fp32 = MiniLMEmbedder(query_precision="int8"), MiniLMEmbedder(query_precision="fp32")
    np.testing.assert_array_equal(served.process.embed_queries(QUERIES), int8.embed_queries(QUERIES))
    np.testing.assert_array_equal(served.process.embed_queries(QUERIES, "fp32"), fp32.embed_queries(QUERIES))
    np.testing.assert_array_equal(served.process.embed_documents(QUERIES), embedder.embed_documents(QUERIES))
    served.clear_query_cache()
    np.testing.assert_array_equal(served.embed_query(QUERIES[0]), int8.embed_query(QUERIES[0]))
    np.testing.assert_array_equal(served.embed_documents(QUERIES[:1]), embedder.embed_documents(QUERIES[:1]))
    assert served.process.embed_queries([]).shape == (0, 384)


def test_concurrent_callers_each_get_their_own_row(served: Any) -> None:
    int8 = MiniLMEmbedder(query_precision="int8")
    texts = [f"question {i}: where did user {i} travel in {2000 + i}?" for i in range(24)]
    served.clear_query_cache()
    got: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, served.embed_query(texts[i]))) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == list(range(24))
    # the in-process rows with the int8 products in float64 (tests/int8_exact.py: the same int32 matrices,
    # ~10x faster than torch._int_mm on this CPU); the child ran the real kernel, so they agree bit for bit
    with exact_int_mm(int8._model):
        want = int8.embed_queries(texts)
    np.testing.assert_array_equal(np.stack([got[i] for i in range(24)]), want)


def test_a_child_killed_mid_batch_fails_that_batch_and_the_next_call_starts_a_fresh_one(served: Any) -> None:
    """The batcher's first call waits until five texts queue behind it; the child is killed as their one
    call goes out: all five callers get a BackendError saying to retry (none is retried alone, which
    would restart the child while everyone waits), and the next call runs on a fresh child."""
    process = served.process
    pid = process.pid
    entered, opened, calls = threading.Event(), threading.Event(), []

    def embed_many(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        if len(calls) == 1:
            entered.set()
            assert opened.wait(20)
        elif len(calls) == 2:
            os.kill(pid, signal.SIGKILL)  # dies with the batch on its way: it can never answer it
        return process.embed_queries(texts)  # type: ignore[no-any-return]

    batcher = QueryBatcher(embed_many)
    got: list[Any] = [None] * 6

    def search(i: int) -> None:
        try:
            got[i] = batcher.embed(f"killed mid-batch {i}")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertions below
            got[i] = exc

    threads = [threading.Thread(target=search, args=(0,))]
    threads[0].start()
    assert entered.wait(20)
    threads += [threading.Thread(target=search, args=(i,)) for i in range(1, 6)]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 20
    while len(batcher._queue) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    opened.set()
    for t in threads:
        t.join(30)
    int8 = MiniLMEmbedder(query_precision="int8")
    np.testing.assert_array_equal(got[0], int8.embed_query("killed mid-batch 0"))
    assert all(isinstance(e, BackendError) and "retry" in str(e) for e in got[1:]), got
    assert [len(c) for c in calls] == [1, 5] and not _alive(pid)
    starts = process.starts
    np.testing.assert_array_equal(batcher.embed("after the restart"), int8.embed_query("after the restart"))
    assert process.starts == starts + 1 and process.pid not in (None, pid)
    batcher.close()


def test_a_child_that_cannot_load_the_model_fails_start_at_once(tmp_path: Path) -> None:
    process = EmbedProcess(tmp_path / "no-model", query_precision="int8", threads=None, start_timeout=60)
    start = time.monotonic()
    with pytest.raises(MemosError, match="could not load MiniLM") as caught:
        process.start()
    assert time.monotonic() - start < 30 and "--no-embed-process" in str(caught.value)
    assert process.pid is None
    process.close()


_FAKE = PREAMBLE + textwrap.dedent('''
    while True:
        n = texts()
        if arg == "hang":
            time.sleep(3600)
        rows = n + 1 if arg == "extra_row" else n
        head = json.dumps({"ok": True, "rows": rows, "dim": 384}).encode()
        body = b"\\0" * (4 * 384 * rows - (1 if arg == "short" else 0))
        if arg == "huge":
            sock.sendall(struct.pack(">I", 2**31)); time.sleep(3600)
        send(struct.pack(">I", len(head)) + head + body)
''')


@pytest.mark.parametrize("mode", ["short", "extra_row", "huge", "hang"])
def test_a_lying_or_hung_child_is_a_backend_error_and_is_killed(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "fake_child.py"
    script.write_text(_FAKE)
    process = EmbedProcess(tmp_path, threads=None, timeout=1.0)
    process.argv = [sys.executable, str(script), mode]
    process.start()
    pid = process.pid
    assert pid is not None
    with pytest.raises(EmbedProcessError, match="retry"):
        process.embed_queries(["a", "b"])
    assert process.pid is None and not _alive(pid)  # never trusted with another call
    process.close()


def test_decode_reply_takes_exactly_the_shape_asked_for() -> None:
    import json
    import struct

    def reply(header: dict[str, Any], body: bytes = b"") -> bytes:
        head = json.dumps(header).encode()
        return struct.pack(">I", len(head)) + head + body

    rows = np.arange(6, dtype="<f4").reshape(2, 3)
    got, _ = decode_reply(reply({"ok": True, "rows": 2, "dim": 3}, rows.tobytes()), 2, 3)
    np.testing.assert_array_equal(got, rows)
    for bad in (reply({"ok": True, "rows": 2, "dim": 3}, rows.tobytes()[:-4]), reply({"ok": True, "rows": 1, "dim": 6},
                rows.tobytes()), b"\x00\x00", b"\xff\xff\xff\xff{}", reply([1]), b"\x00\x00\x00\x02\xff\xfe"):  # type: ignore[arg-type]
        with pytest.raises(EmbedProcessError):
            decode_reply(bad, 2, 3)
    with pytest.raises(InvalidInputError, match="too long"):  # the child's MemosError keeps its class
        decode_reply(reply({"ok": False, "error_class": "InvalidInputError", "error": "too long"}), 2, 3)
    with pytest.raises(BackendError, match="TypeError"):  # anything else is a BackendError naming it
        decode_reply(reply({"ok": False, "error_class": "TypeError", "error": "odd input"}), 2, 3)


def test_close_stops_the_child_and_refuses_later_calls(tmp_path: Path) -> None:
    """Closing closes the socket: the child reads end of file and exits by itself (as it does when its parent dies)."""
    script = tmp_path / "fake_child.py"
    script.write_text(_FAKE)
    process = EmbedProcess(tmp_path, threads=None)
    process.argv = [sys.executable, str(script), "short"]
    process.start()
    proc = process._proc
    process.close()
    assert proc is not None and proc.returncode == 0  # it read end of file and exited, not killed
    with pytest.raises(BackendError, match="closed"):
        process.embed_queries(["after close"])


def test_closing_the_served_embedder_leaves_no_process(served: Any) -> None:
    pid = served.process.pid
    proc = served.process._proc
    served.close()
    assert not _alive(pid) and proc.returncode == 0
    with pytest.raises(BackendError):
        served.embed_query("after the service stopped")


def test_a_child_whose_parent_is_killed_exits_by_itself(tmp_path: Path) -> None:
    """kill -9 of the serving process: its socket closes with it, so the child reads end of file and exits."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    code = textwrap.dedent("""
        import time
        from memos_integrations.textual.embed import MiniLMEmbedder
        from memos_integrations.textual.embed_process import EmbedProcess
        process = EmbedProcess.like(MiniLMEmbedder())
        process.start()
        print(process.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert _alive(pid)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "the embedding process outlived its parent"
        time.sleep(0.05)
