"""MiniLM in a child process: the service's query embeddings off the serving process's GIL.

Why: in one process the HTTP and engine work of a search (~4 ms of Python holding the GIL) and the
embedding thread's Python glue between torch ops contend for one GIL. A thread that releases it for a
torch op may wait up to the 5 ms switch interval to get it back, so a batch costing ~15 ms of CPU took
~80 ms of wall time under load (issue 13). In a child process the embedding's Python runs on its own
GIL; the serving process's batcher thread only sends the texts and blocks in ``recv`` (GIL released).

How: :class:`EmbedProcess` starts a Python child running :func:`main` with one end of a Unix socket
pair. The child loads the same model (directory, backend, torch threads) and answers
one request at a time with what ``MiniLMEmbedder.embed_queries`` / ``embed_documents`` compute in the
parent: the same code path, so the same bits. Nothing is pickled: a request is JSON (UTF-8, ASCII
escapes, so lone surrogates survive), a reply a JSON header (rows, dimension) then raw little-endian
float32 rows, each framed by a 4-byte length. The parent trusts the child's bytes only as far as a
shape check: a reply whose header or length is not exactly what was asked for is a :class:`BackendError`.

Failure: a child that dies, hangs (no reply within ``timeout``) or answers garbage fails the call in
flight with :class:`EmbedProcessError` (a :class:`BackendError`: retry); the child is killed and the
next call starts a fresh one, unless children died :data:`DEATHS` times within :data:`DEATH_WINDOW_S`
s: then calls fail at once with :class:`EmbedProcessUnavailableError` (a 503) for :data:`BACKOFF_S` s
(logged) and one child is tried after that, so a child that keeps dying costs no model load per request.
A child that cannot start (a bad model directory) fails :meth:`EmbedProcess.start` with the child's own reason, never a hang. The child ignores SIGINT and
SIGTERM (a Ctrl-C or a ``kill`` of the process group reaches it too, and it must keep answering while
its parent drains its requests) and exits when its socket closes: on :meth:`EmbedProcess.close`, or when
its parent dies, so it never outlives the service.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .. import errors
from ..errors import BackendError, MemosError

_log = logging.getLogger(__name__)
_LENGTH = struct.Struct(">I")
#: the largest reply header the parent reads (a header is ~60 bytes; anything larger is garbage)
_MAX_HEADER = 64 * 1024
#: the largest request the child reads (the batcher sends at most 32 texts of at most 4096 characters)
_MAX_REQUEST = 64 * 1024 * 1024
#: a child that died this many times within ``DEATH_WINDOW_S`` seconds is not restarted for ``BACKOFF_S`` s
DEATHS = 3
DEATH_WINDOW_S = 30.0
BACKOFF_S = 5.0
#: the largest token scale the parent takes: a row's largest component / 127 (MiniLM's last layer is O(1))
_MAX_SCALE = 1e3
_CHILD = "import sys; sys.path[0] = sys.argv[1]; from memos_integrations.textual.embed_process import main; main()"


class EmbedProcessError(BackendError):
    """The embedding process failed as a process (died, hung, answered garbage), not on a text.

    ``whole_batch``: the batcher fails every caller of the call in flight rather than retrying each text
    alone, as a retry would first restart the child (seconds) while every other search waits."""

    whole_batch = True


class EmbedProcessUnavailableError(EmbedProcessError):
    """The child died :data:`DEATHS` times within :data:`DEATH_WINDOW_S` s: calls fail at once (the service's
    503) for :data:`BACKOFF_S` s instead of starting a child (seconds of model loading) per call."""


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytes | None:
    """``n`` bytes, or None on end of file; ``socket.timeout`` past ``deadline``."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def _recv(sock: socket.socket, limit: int, deadline: float | None = None) -> bytes | None:
    """One framed message of at most ``limit`` bytes, or None on end of file."""
    head = _recv_exact(sock, _LENGTH.size, deadline)
    if head is None:
        return None
    (n,) = _LENGTH.unpack(head)
    if n > limit:
        raise ValueError(f"a message of {n} bytes (at most {limit} expected)")
    return _recv_exact(sock, n, deadline)


#: what a reply's token vectors are: per text, its last layer's rows (int8) and one scale per row (``late.quantise``)
Tokens = list[tuple[np.ndarray, np.ndarray]]


def decode_reply(reply: bytes, rows: int, dim: int, tokens: Sequence[int] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``(rows, dim)`` float32 matrix in a child's reply, and the reply's header; nothing else passes.

    ``tokens``: how many tokens each text has (the parent's own tokenizer counted them) when the request asked
    for token vectors: the header's ``tokens`` must be exactly these counts, the payload the matrix then the
    int8 rows then their float32 scales (finite and positive), and the header gets ``"token_rows"``
    (:data:`Tokens`, one entry per text).

    Raises:
        MemosError: the child's own error (its class when it is a MemosError, else a BackendError).
        EmbedProcessError: the reply is not a well-formed answer of exactly that shape.
    """
    try:
        (n,) = _LENGTH.unpack_from(reply)
        if n > _MAX_HEADER or _LENGTH.size + n > len(reply):
            raise ValueError(f"a header of {n} bytes in a reply of {len(reply)}")
        header = json.loads(reply[_LENGTH.size:_LENGTH.size + n])
        if not isinstance(header, dict):
            raise ValueError("the header is not an object")
        payload = memoryview(reply)[_LENGTH.size + n:]
        failed = header.get("ok") is not True
        total = sum(tokens) if tokens is not None else 0
        if not failed and (header.get("rows") != rows or header.get("dim") != dim
                           or len(payload) != rows * dim * 4 + total * (dim + 4)):
            raise ValueError(f"{header.get('rows')!r} x {header.get('dim')!r} in {len(payload)} bytes, for {rows} "
                             f"texts of {dim} dimensions{f' and {total} token vectors' if tokens is not None else ''}")
        if not failed and tokens is not None:
            header["token_rows"] = _token_rows(header.get("tokens"), list(tokens), payload[rows * dim * 4:], dim)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise EmbedProcessError(f"the embedding process sent a malformed reply ({exc}); it is restarted on the next "
                                "call: retry the request") from exc
    if failed:  # the child answered, with its own error for these texts
        raise _child_error(str(header.get("error_class")), str(header.get("error")))
    return np.frombuffer(payload[:rows * dim * 4], dtype="<f4").astype(np.float32).reshape(rows, dim), header


def _token_rows(said: Any, counts: list[int], payload: memoryview, dim: int) -> Tokens:
    """The per-text (int8 rows, scales) of a reply's token part; ValueError unless exactly ``counts`` rows each,
    with finite positive scales."""
    if said != counts:
        raise ValueError(f"token counts {str(said)[:200]} for texts of {counts} tokens")
    total = sum(counts)
    q = np.frombuffer(payload[:total * dim], dtype=np.int8).reshape(total, dim)
    scales = np.frombuffer(payload[total * dim:], dtype="<f4").astype(np.float32)
    if not (np.isfinite(scales).all() and (scales > 0).all() and (scales < _MAX_SCALE).all()):
        raise ValueError("token vector scales that are not finite and positive")
    out: Tokens = []
    at = 0
    for c in counts:
        out.append((q[at:at + c].copy(), scales[at:at + c].copy()))
        at += c
    return out


def _child_error(name: str, message: str) -> MemosError:
    """The child's error as the same MemosError class (an unknown or non-MemosError class: BackendError)."""
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, MemosError):
        return cls(message)
    return BackendError(f"embedding failed in the embedding process ({name}: {message}); retry, and check the "
                        "embedder if it persists")


class EmbedProcess:
    """A MiniLM embedder in a child process; thread-safe (one request in flight, the rest wait their turn).

    Args:
        model_dir: the model folder (what ``MiniLMEmbedder.model_dir`` holds).
        backend: ``MiniLMEmbedder.backend`` ("auto", "torch" or "numpy").
        query_precision: what :meth:`embed_queries` embeds in unless told ("fp32", "int8" or "auto").
        timeout: seconds a call may wait for its reply before the child counts as hung (killed, BackendError).
        start_timeout: seconds the child may take to load the model and say it is ready.
        threads: torch threads in the child (default: the parent's, when it has torch loaded), so its
            floating-point sums run as the parent's would.
    """

    dimension = 384

    def __init__(self, model_dir: str | Path, *, backend: str = "auto", query_precision: str = "fp32",
                 batch_size: int = 64, timeout: float = 30.0, start_timeout: float = 180.0,
                 threads: int | None = None) -> None:
        self.model_dir = Path(model_dir).absolute()
        self.backend = backend
        self.query_precision = query_precision
        self.batch_size = batch_size
        self.timeout = timeout
        self.start_timeout = start_timeout
        if threads is None and "torch" in sys.modules:
            threads = int(sys.modules["torch"].get_num_threads())
        self.threads = threads
        #: the child's command line (its JSON config is appended); a test may point it at another program
        #: speaking the same protocol. The child imports this very package: sys.path[0] is the folder holding
        #: it (a checkout run from its folder, not another installed copy), never the working directory
        self.argv = [sys.executable, "-c", _CHILD, str(Path(__file__).resolve().parents[2])]
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._closed = False
        #: what the running child reported when ready (pid, backend, query precision in use)
        self.info: dict[str, Any] = {}
        #: requests answered, starts, and the child's own seconds computing (a benchmark reports them)
        self.requests = 0
        self.starts = 0
        self.child_busy_s = 0.0
        self._deaths: list[float] = []  # when children died (monotonic), for the backoff
        self._rest_until = 0.0

    @classmethod
    def like(cls, embedder: Any, **kw: Any) -> EmbedProcess:
        """An embedding process computing what ``embedder`` (a ``MiniLMEmbedder``) computes; not started."""
        return cls(embedder.model_dir, backend=embedder.backend, query_precision=embedder.query_precision,
                   batch_size=embedder.batch_size, **kw)

    @property
    def pid(self) -> int | None:
        """The running child's process id (None when none runs)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    # -- life ----------------------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the child without waiting for it (it loads the model meanwhile); :meth:`start` waits."""
        with self._lock:
            self._launch()

    def start(self) -> None:
        """Start the child (if none runs) and wait until it has loaded the model.

        Raises:
            BackendError: the child could not load the model (its reason), exited, or was not ready within
                ``start_timeout`` s; or this process was closed.
        """
        with self._lock:
            self._ready()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child: its socket closes, so it exits; killed if it has not within ``timeout`` s."""
        with self._lock:
            self._closed = True
            self._stop(timeout)

    def _launch(self) -> None:
        if self._closed:
            raise EmbedProcessError("the embedding process is closed (the service is shutting down); retry the request")
        if self._proc is not None:
            return
        self._check_rest()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        config = {"model_dir": str(self.model_dir), "backend": self.backend, "query_precision": self.query_precision,
                  "batch_size": self.batch_size, "threads": self.threads, "fd": child.fileno()}
        try:
            self._proc = subprocess.Popen([*self.argv, json.dumps(config)], pass_fds=(child.fileno(),),
                                          stdin=subprocess.DEVNULL)
        except OSError as exc:
            parent.close()
            raise EmbedProcessError(f"cannot start the embedding process ({exc}); serve with --no-embed-process "
                                    "to embed in the serving process") from exc
        finally:
            child.close()
        self._sock = parent
        self.info = {}
        self.starts += 1

    def _ready(self) -> socket.socket:
        self._launch()
        assert self._sock is not None and self._proc is not None
        if self.info:
            return self._sock
        try:
            hello = _recv(self._sock, _MAX_HEADER, time.monotonic() + self.start_timeout)
            info = json.loads(hello) if hello is not None else None
        except (OSError, ValueError) as exc:  # socket.timeout is an OSError
            self._died()
            raise EmbedProcessError(f"the embedding process did not start within {self.start_timeout:g} s ({exc}); "
                                    "serve with --no-embed-process to embed in the serving process") from exc
        if not isinstance(info, dict) or info.get("ok") is not True or info.get("dim") != self.dimension:
            self._died()
            why = info.get("error") if isinstance(info, dict) else "it exited before saying it was ready"
            raise EmbedProcessError(f"the embedding process could not load MiniLM from {self.model_dir}: {why}; check "
                                    "the model, or serve with --no-embed-process")
        self.info = info
        return self._sock

    def _stop(self, timeout: float) -> None:
        proc, sock = self._proc, self._sock
        self._proc = self._sock = None
        self.info = {}
        if sock is not None:
            sock.close()  # the child reads end of file and exits
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- calls ---------------------------------------------------------------------------------------
    def embed_queries(self, texts: Sequence[str], precision: str | None = None) -> np.ndarray:
        """``MiniLMEmbedder.embed_queries(texts)`` in ``precision`` (default: this process's ``query_precision``)."""
        return self._call("query", texts, precision or self.query_precision)  # type: ignore[return-value]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``MiniLMEmbedder.embed_documents(texts)`` (fp32)."""
        return self._call("document", texts, "fp32")  # type: ignore[return-value]

    def embed_with_tokens(self, kind: str, texts: Sequence[str], counts: Sequence[int]) -> tuple[np.ndarray, Tokens]:
        """The fp32 vectors of ``texts`` (``kind``: "query" or "document") and each text's last-layer token
        vectors from the same pass (int8 rows and scales, as ``late.seen`` holds them): the ``late`` preset's
        input (textual/late.py). ``counts``: each text's token count by the caller's tokenizer (the reply
        must have exactly these rows).

        Raises:
            EmbedProcessError: as the other calls, and when the token vectors are not exactly ``counts`` rows of
                this dimension with finite positive scales (nothing of the reply is used).
        """
        if kind not in ("query", "document") or len(counts) != len(texts):
            raise ValueError("kind must be 'query' or 'document', with one token count per text")
        return self._call(kind, texts, "fp32", [int(c) for c in counts])  # type: ignore[return-value]

    def _call(self, kind: str, texts: Sequence[str], precision: str,
              counts: list[int] | None = None) -> np.ndarray | tuple[np.ndarray, Tokens]:
        texts = [str(t) for t in texts]
        if not texts:
            empty = np.zeros((0, self.dimension), dtype=np.float32)
            return empty if counts is None else (empty, [])
        ask: dict[str, Any] = {"kind": kind, "precision": precision, "texts": texts}
        if counts is not None:
            ask["tokens"] = True
        request = json.dumps(ask).encode()
        most = _MAX_HEADER + len(texts) * self.dimension * 4 + sum(counts or ()) * (self.dimension + 4)
        with self._lock:
            sock = self._ready()
            try:
                sock.settimeout(self.timeout)
                _send(sock, request)
                reply = _recv(sock, most, time.monotonic() + self.timeout)
            except TimeoutError as exc:  # hung (socket.timeout is TimeoutError)
                self._fail(f"no reply within {self.timeout:g} s, so it was killed", exc)
            except (OSError, ValueError) as exc:  # died (EPIPE, ECONNRESET), an oversized frame
                self._fail(f"it failed mid-call ({type(exc).__name__}: {exc})", exc)
            if reply is None:
                self._fail("it exited mid-call", None)
            try:
                vectors, header = decode_reply(reply, len(texts), self.dimension, counts)
            except EmbedProcessError:
                self._died()  # a child that sends garbage is not trusted with the next call
                raise
            self.requests += 1
            seconds = header.get("s")
            self.child_busy_s += float(seconds) if isinstance(seconds, (int, float)) else 0.0
            return vectors if counts is None else (vectors, header["token_rows"])

    def _fail(self, why: str, cause: BaseException | None) -> NoReturn:
        code = self._proc.poll() if self._proc is not None else None
        self._died()
        error = EmbedProcessError(f"the embedding process stopped answering: {why}"
                                  f"{f', exit status {code}' if code is not None else ''}; it is restarted on the next "
                                  "call: retry the request")
        raise error from cause

    # -- a child that keeps dying ---------------------------------------------------------------------------
    def _died(self) -> None:
        """Stop the child that failed and count its death; the third within the window starts a rest."""
        self._stop(0)
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < DEATH_WINDOW_S][-DEATHS:] + [now]
        if len(self._deaths) >= DEATHS:
            self._rest_until = now + BACKOFF_S
            _log.warning("the embedding process died %d times within %g s; backing off: calls fail at once for %g s, "
                         "then one new child is tried (see the errors above for why it dies)",
                         len(self._deaths), DEATH_WINDOW_S, BACKOFF_S)

    def _check_rest(self) -> None:
        """Fail at once while resting after repeated deaths (no child is started)."""
        left = self._rest_until - time.monotonic()
        if left > 0:
            raise EmbedProcessUnavailableError(
                f"the embedding process died {len(self._deaths)} times within {DEATH_WINDOW_S:g} s, so none is started "
                f"for {BACKOFF_S:g} s (the service log says why it dies): retry in {left:.1f} s")

    def cpu_seconds(self) -> float:
        """The running child's user + system CPU seconds so far (0 when none runs); Linux ``/proc`` or psutil."""
        pid = self.pid
        if pid is None:
            return 0.0
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            try:
                import psutil

                t = psutil.Process(pid).cpu_times()
                return float(t.user + t.system)
            except (ImportError, OSError):
                return 0.0


# -- the child ---------------------------------------------------------------------------------------
def _serve(sock: socket.socket, config: dict[str, Any]) -> None:
    from . import late
    from .embed import MiniLMEmbedder
    from .int8_fast import int8_thread

    if config.get("threads"):
        import torch

        torch.set_num_threads(int(config["threads"]))
    embedders: dict[str, MiniLMEmbedder] = {}

    def embedder(precision: str) -> MiniLMEmbedder:
        if precision not in embedders:  # one per precision; they share the loaded model (shared_model)
            embedders[precision] = MiniLMEmbedder(config["model_dir"], batch_size=int(config["batch_size"]),
                                                  backend=config["backend"], query_precision=precision)
        return embedders[precision]

    first = embedder(config["query_precision"])
    try:
        first.embed_documents(["warm up"])  # loads the model now: a bad model directory fails here, said below
        in_use = first.query_precision_in_use  # prepares the int8 layers before the first search
    except MemosError as exc:
        hello = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    else:
        hello = {"ok": True, "pid": os.getpid(), "dim": first.dimension, "precision_in_use": in_use,
                 "backend": first._model.backend}
    try:
        _send(sock, json.dumps(hello).encode())
    except OSError:
        return  # the parent is gone (it died, or gave up waiting)
    if not hello["ok"]:
        return
    while True:
        try:
            message = _recv(sock, _MAX_REQUEST)
        except (OSError, ValueError):
            return
        if message is None:  # the parent closed its end (close(), or it died)
            return
        start = time.perf_counter()
        try:
            request = json.loads(message)
            texts = request["texts"]
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise errors.InvalidInputError("texts must be a list of strings")
            tokens = request.get("tokens") is True
            precision = "fp32" if tokens else str(request["precision"])  # the int8 pass keeps no token vectors
            with late.capture() if tokens else nullcontext() as got:
                if request["kind"] == "query":
                    with int8_thread(embedder(precision)):  # no OpenMP worker woken per query
                        vectors = embedder(precision).embed_queries(texts)
                else:
                    vectors = first.embed_documents(texts)
            rows = np.ascontiguousarray(vectors, dtype="<f4")
            header = {"ok": True, "rows": rows.shape[0], "dim": rows.shape[1]}
            body = rows.tobytes()
            if tokens:
                header["tokens"], extra = _child_tokens(first, texts, got)
                body += extra
            header["s"] = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - the cause travels to the parent, which raises it for its caller
            # the message only (it may quote a text: bounded, so the header stays far below _MAX_HEADER)
            header, body = {"ok": False, "error_class": type(exc).__name__, "error": str(exc)[:2000]}, b""
        head = json.dumps(header).encode()
        try:
            _send(sock, _LENGTH.pack(len(head)) + head + body)
        except OSError:
            return  # the parent is gone


def _child_tokens(embedder: Any, texts: list[str], got: Any) -> tuple[list[int], bytes]:
    """Each text's token count and, packed, every text's int8 rows then every row's float32 scale."""
    held = [got.get(tuple(e.ids)) for e in embedder._model.tokenizer.encode_batch(texts)]
    if any(h is None for h in held):
        raise errors.BackendError("the embedding process's pass kept no token vectors for the late preset; "
                                  "search with another plan, and report this")
    q = np.concatenate([h[0] for h in held]) if held else np.zeros((0, 0), dtype=np.int8)
    scales = np.concatenate([h[1] for h in held]) if held else np.zeros(0, dtype=np.float32)
    return [len(h[0]) for h in held], np.ascontiguousarray(q, dtype=np.int8).tobytes() + scales.astype("<f4").tobytes()


def main() -> None:
    """The child's entry point; its last argument is its JSON config (:attr:`EmbedProcess.argv`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it lives as long as its socket: see the module docstring
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config = json.loads(sys.argv[-1])
    sock = socket.socket(fileno=int(config["fd"]))
    try:
        _serve(sock, config)
    finally:
        sock.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # nothing to save: skip the interpreter's teardown (a second with torch loaded)


if __name__ == "__main__":
    main()
