"""Token vectors crossing the embedding child's socket (textual/embed_process.py, server/late_embed.py): a child that
dies on a late search or an add is a 503 with a message that says to retry, never a hang, and the service goes on
serving plain searches; token vectors of the wrong shape or with a NaN scale are refused before anything is
written. The child here is a small script speaking the protocol, with the real tokenizer (its token counts are
the parent's)."""

from __future__ import annotations

import json
import struct
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from memos_integrations.mos import MOS  # noqa: E402
from memos_integrations.server import KeyStore, Limits, create_app  # noqa: E402
from memos_integrations.server.late_embed import LateBatched  # noqa: E402
from memos_integrations.textual.embed import MiniLMEmbedder  # noqa: E402
from memos_integrations.textual.embed_process import EmbedProcess, EmbedProcessError, decode_reply  # noqa: E402
from tests.integration.stand_in_child import PREAMBLE  # noqa: E402

_CHILD = PREAMBLE + textwrap.dedent('''
    import zlib
    import numpy as np
    from tokenizers import Tokenizer
    mode = arg
    tok = Tokenizer.from_file(os.path.join(config["model_dir"], "tokenizer.json"))
    tok.enable_truncation(256)
    tok.no_padding()
    while True:
        req = json.loads(recv(struct.unpack(">I", recv(4))[0]))
        texts = req["texts"]
        if req.get("tokens") and mode == "die":
            os._exit(3)  # killed mid-request
        vec = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(384) for t in texts])
        vec = (vec / np.linalg.norm(vec, axis=1, keepdims=True)).astype("<f4")
        header, body = {"ok": True, "rows": len(texts), "dim": 384}, vec.tobytes()
        if req.get("tokens"):
            counts = [len(e.ids) for e in tok.encode_batch(texts)]
            if mode == "short":
                counts[0] -= 1  # one token's row missing: a shape the parent did not ask for
            q = np.ones((sum(counts), 384), dtype=np.int8)
            s = np.full(sum(counts), 0.01, dtype="<f4")
            if mode == "nan":
                s[0] = np.nan
            header["tokens"] = counts
            body += q.tobytes() + s.tobytes()
        head = json.dumps(header).encode()
        send(struct.pack(">I", len(head)) + head + body)
''')


class World:
    def __init__(self, mos: MOS, client: TestClient, auth: dict[str, str], emb: LateBatched) -> None:
        self.mos, self.client, self.auth, self.emb = mos, client, auth, emb

    def count(self) -> tuple[int, int]:
        store = self.mos._cube("c").text_mem.store
        return len(self.mos._cube("c").text_mem.list_items()), store.db.read("SELECT count(*) FROM late_tokens")[0][0]

    def search(self, q: str, plan: str) -> Any:
        return self.client.post("/v1/memories/search", json={"query": q, "k": 3, "plan": plan, "cube_id": "c"},
                                headers=self.auth)

    def add(self, text: str) -> Any:
        return self.client.post("/v1/memories", json={"text": text, "cube_id": "c"}, headers=self.auth)


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path, one_torch_thread: None, embedder: Any) -> Iterator[World]:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    inner = MiniLMEmbedder(query_precision="int8")
    process = EmbedProcess(inner.model_dir, threads=None, timeout=10.0)
    process.argv = [sys.executable, str(script), request.param]
    process.start()
    emb = LateBatched(inner, process)
    mos = MOS(tmp_path / "home", embedder=emb)
    keys = KeyStore.open(mos.home / "mos.db")
    mos.create_user("alice")
    mos.create_cube_for_user("c", owner_id="alice")
    auth = {"Authorization": f"Bearer {keys.create('alice')[0]}"}
    client = TestClient(create_app(mos, keys=keys, limits=Limits(rate=0), mcp=False), raise_server_exceptions=False)
    with client:
        # two turns in one request: embedded in this process (several texts), never by the child
        r = client.post("/v1/memories", headers=auth, json={"cube_id": "c", "session_id": "s", "messages": [
            {"role": "user", "name": "Melanie", "content": "We painted the sunset at the lake."},
            {"role": "user", "name": "Caroline", "content": "I joined a pottery class."}]})
        assert r.status_code in (200, 201), r.text
        yield World(mos, client, auth, emb)
    keys.close()
    mos.close()
    emb.close()


def _refused(r: Any) -> str:
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["type"] in ("EmbedProcessError", "EmbedProcessUnavailableError") and "retry" in error["message"]
    return str(error["message"])


@pytest.mark.parametrize("world", ["die"], indirect=True)
def test_a_child_that_dies_mid_request_is_a_503_and_the_service_goes_on(world: World) -> None:
    before = world.count()
    assert before == (2, 2)
    start = time.monotonic()
    _refused(world.search("What did Melanie paint?", "late"))  # its fp32 pass with token vectors: the child dies
    assert world.search("What did Melanie paint?", "learned").status_code == 200  # a fresh child serves plain ones
    _refused(world.add("Melanie adopted a puppy named Max."))  # a one-text add's pass asks for tokens: dies too
    assert time.monotonic() - start < 20  # never a hang
    assert world.count() == before


@pytest.mark.parametrize("world", ["short", "nan"], indirect=True)
def test_token_vectors_of_the_wrong_shape_or_nan_are_refused_before_anything_is_written(world: World) -> None:
    before = world.count()
    assert "malformed" in _refused(world.add("Melanie adopted a puppy named Max."))
    assert world.count() == before  # neither the item nor its tokens
    assert "malformed" in _refused(world.search("What did Melanie paint?", "late"))
    assert world.search("What did Melanie paint?", "balanced").status_code == 200


@pytest.mark.parametrize("world", ["ok"], indirect=True)
def test_a_well_formed_child_reply_is_stored(world: World) -> None:
    r = world.add("Melanie adopted a puppy named Max.")
    assert r.status_code in (200, 201), r.text
    assert world.count() == (3, 3)  # the child's token rows were taken and written with the item


def _reply(header: dict[str, Any], body: bytes) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head + body


def test_decode_reply_takes_exactly_the_token_vectors_asked_for() -> None:
    vec = np.zeros((2, 3), dtype="<f4").tobytes()
    q, s = np.arange(5 * 3, dtype=np.int8).reshape(5, 3), np.full(5, 0.5, dtype="<f4")
    good = {"ok": True, "rows": 2, "dim": 3, "tokens": [2, 3]}
    _, header = decode_reply(_reply(good, vec + q.tobytes() + s.tobytes()), 2, 3, [2, 3])
    (q0, s0), (q1, s1) = header["token_rows"]
    np.testing.assert_array_equal(q0, q[:2])
    np.testing.assert_array_equal(q1, q[2:])
    np.testing.assert_array_equal(np.concatenate([s0, s1]), s)
    nan = s.copy()
    nan[3] = np.nan
    bad = [(good, vec + q.tobytes() + s.tobytes(), [2, 2]),  # counts other than the parent's
           ({**good, "tokens": [1, 4]}, vec + q.tobytes() + s.tobytes(), [2, 3]),  # same total, other split
           (good, vec + q.tobytes() + nan.tobytes(), [2, 3]),  # NaN scale
           (good, vec + q.tobytes() + (-s).tobytes(), [2, 3]),  # negative scale
           (good, vec + q.tobytes() + s.tobytes() + b"\x00", [2, 3]),  # a byte too many
           (good, vec + q.tobytes(), [2, 3])]  # scales missing
    for header, body, counts in bad:
        with pytest.raises(EmbedProcessError, match="malformed"):
            decode_reply(_reply(header, body), 2, 3, counts)
