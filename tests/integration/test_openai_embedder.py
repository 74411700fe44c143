"""The OpenAI-compatible embedder, through the real ``openai`` SDK, against a stand-in server.

The server below is a stand-in: a tiny OpenAI-compatible ``/v1/embeddings`` endpoint on 127.0.0.1
that returns deterministic vectors (no hosted API is reachable here). It records each request so the
test can check what the SDK sent: the model, the batches, the dimensions, the key from the environment.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos_integrations import MemCube
from memos_integrations.config import CubeConfig, EmbedderConfig
from memos_integrations.errors import EmbedderMismatchError

DIM = 24


def fake_vector(text: str, dim: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return np.random.default_rng(seed).normal(size=dim).tolist()


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # TCP_NODELAY: no ~40 ms delayed-ACK wait between the headers and the body
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dim = body.get("dimensions") or DIM
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, dim)} for i, t in enumerate(inputs)]
        data.reverse()  # the API does not promise order; the embedder must sort by index
        payload = json.dumps({"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(monkeypatch) -> Iterator[tuple[str, list[dict[str, Any]]]]:  # type: ignore[no-untyped-def]
    _Handler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)  # shutdown: no 0.5 s wait
    thread.start()
    monkeypatch.setenv("STANDIN_EMBED_KEY", "sk-test-standin")
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", _Handler.requests
    httpd.shutdown()
    httpd.server_close()


def test_openai_embedder_through_the_sdk(server) -> None:  # type: ignore[no-untyped-def]
    from memos_integrations.textual.embed import OpenAIEmbedder

    base_url, requests = server
    emb = OpenAIEmbedder("standin-embed", base_url=base_url, api_key_env="STANDIN_EMBED_KEY", batch_size=2)
    texts = ["one", "two", "three", "four", "five"]
    out = emb.embed_documents(texts)
    assert out.shape == (5, DIM)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    expected = np.array([fake_vector(t, DIM) for t in texts])
    np.testing.assert_allclose(out, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)
    assert [r["input"] for r in requests] == [["one", "two"], ["three", "four"], ["five"]]  # batched, in order
    assert all(r["path"] == "/v1/embeddings" and r["model"] == "standin-embed" for r in requests)
    assert requests[0]["auth"] == "Bearer sk-test-standin"
    assert emb.dimension == DIM and emb.name == "openai:standin-embed"
    np.testing.assert_allclose(emb.embed_query("three"), out[2], atol=1e-6)


def test_requested_dimensions_are_sent(server) -> None:  # type: ignore[no-untyped-def]
    from memos_integrations.textual.embed import OpenAIEmbedder

    base_url, requests = server
    emb = OpenAIEmbedder("standin-embed", base_url=base_url, api_key_env="STANDIN_EMBED_KEY", dimensions=8)
    assert emb.dimension == 8 and emb.embed_query("x").shape == (8,)
    assert requests[-1]["dimensions"] == 8


def test_cube_configured_for_an_openai_compatible_endpoint(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base_url, requests = server
    config = CubeConfig(embedder=EmbedderConfig(provider="openai", model="standin-embed", base_url=base_url,
                                                api_key_env="STANDIN_EMBED_KEY"))
    with MemCube.init_from_dir(tmp_path / "oa", config) as cube:
        item = cube.add(memory="Maya learns the harp.", user_id="maya")[0]
        assert cube.search("Maya learns the harp.", user_id="maya", top_k=1)[0].item.id == item.id
    header = (tmp_path / "oa" / "cube.json").read_text()
    assert "sk-test-standin" not in header and "STANDIN_EMBED_KEY" in header
    with MemCube.open(tmp_path / "oa") as again:  # rebuilt from cube.json, key from the environment
        assert again.embedder.name == "openai:standin-embed" and again.get(item.id).text == "Maya learns the harp."
    other = CubeConfig(embedder=EmbedderConfig(provider="openai", model="standin-embed", base_url=base_url,
                                               api_key_env="STANDIN_EMBED_KEY", dimensions=12))
    from memos_integrations.textual.embed import from_config

    with pytest.raises(EmbedderMismatchError):
        MemCube.open(tmp_path / "oa", embedder=from_config(other.embedder))
