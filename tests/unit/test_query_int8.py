"""Int8 query embeddings (MiniLMEmbedder(query_precision="int8"), textual/minilm.py Int8Linears).

What must hold: an int8 query vector stays close to the fp32 one on hostile texts (empty, one token,
longer than the model reads, non-ASCII); documents, stored vectors and the fingerprint do not change,
so a cube opens and finds the same top hits with either precision; the int8 layers are prepared once,
and concurrent callers get what serial ones get; a caller batched by the service's micro-batcher gets
the row it would get alone; where the int8 product is missing, queries fall back to fp32 with one
logged warning, never an error.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memos_integrations import MemCube
from memos_integrations.errors import InvalidInputError
from memos_integrations.textual import minilm
from memos_integrations.textual.batching import BatchedEmbedder, batched
from memos_integrations.textual.embed import MiniLMEmbedder
from tests.int8_exact import exact_int_mm

pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

HOSTILE = [
    "", " ", "?", "a", "tea",
    "When did Caroline go to the LGBTQ support group?",
    "Ünïcödé: où est le café? 日本語のテキスト ❤️ Привет",
    "word " * 400 + "and a tail the model never reads",  # > 256 tokens: truncated
]


@pytest.fixture(scope="module")
def int8(embedder: Any) -> MiniLMEmbedder:
    e = MiniLMEmbedder(embedder.model_dir, query_precision="int8")
    assert e.query_precision_in_use == "int8"  # torch here has the int8 product
    return e


@pytest.fixture(scope="module")
def fp32(embedder: Any) -> MiniLMEmbedder:
    return MiniLMEmbedder(embedder.model_dir, query_precision="fp32")


def test_int8_query_vectors_stay_close_to_fp32_on_hostile_texts(int8: MiniLMEmbedder, fp32: MiniLMEmbedder) -> None:
    # the int8 products in float64 (tests/int8_exact.py: the same int32 matrices; the real kernel's 256-token
    # passes cost ~3 s each here): what is checked is the int8 scheme's arithmetic, the same either way. The
    # real torch._int_mm runs in the tests below, in test_query_fastpath.py (there on the 256-token text too,
    # against rows computed this way) and in test_embed_process.py (the empty query too)
    with exact_int_mm(int8._model):
        for text in HOSTILE:
            q8, q32 = int8.embed_query(text), fp32.embed_query(text)
            assert q8.dtype == np.float32 and q8.shape == (384,) and np.isfinite(q8).all()
            assert abs(float(np.linalg.norm(q8)) - 1.0) < 1e-5
            assert float(q8 @ q32) >= 0.98, text[:40]
            assert not np.array_equal(q8, q32)  # really computed in int8
        assert int8.embed_queries([]).shape == (0, 384)
        # the model reads 256 tokens: a tail beyond them changes nothing, in int8 as in fp32
        np.testing.assert_allclose(int8.embed_query(HOSTILE[-1]), int8.embed_query("word " * 400), atol=1e-6)
    int8.clear_query_cache()  # the tests below compute theirs with the real kernel


def test_documents_and_fingerprint_do_not_depend_on_query_precision(int8: MiniLMEmbedder, fp32: MiniLMEmbedder) -> None:
    docs = ["Alice drinks oolong tea", "Bob adopted a dog"]
    np.testing.assert_array_equal(int8.embed_documents(docs), fp32.embed_documents(docs))
    assert int8.fingerprint == fp32.fingerprint
    assert (int8.name, int8.dimension) == (fp32.name, fp32.dimension)


def test_a_cube_built_with_one_precision_opens_and_finds_the_same_top_hits_with_the_other(
        tmp_path: Path, int8: MiniLMEmbedder, fp32: MiniLMEmbedder) -> None:
    facts = ["Alice drinks roasted rice tea every morning", "Bob adopted a rescue dog named Biscuit",
             "Carol is training for the Berlin marathon", "Dan repairs vintage motorcycles on weekends",
             "Erin paints watercolour sunsets by the lake", "Frank is learning Japanese with flashcards"]
    queries = ["what tea does Alice like", "who has a dog", "marathon training", "motorbike repair",
               "watercolor painting", "studying a language"]

    def tops(cube: MemCube) -> list[str]:
        return [cube.search(q, top_k=3)[0].item.text for q in queries]

    cube = MemCube.init_from_dir(tmp_path / "c", embedder=int8)
    for fact in facts:
        cube.add(memory=fact, user_id="u")
    with_int8 = tops(cube)
    cube.close()
    cube = MemCube.open(tmp_path / "c", embedder=fp32)  # no EmbedderMismatchError: same fingerprint
    with_fp32 = tops(cube)
    cube.close()
    cube = MemCube.open(tmp_path / "c", embedder=int8)  # and back
    assert tops(cube) == with_int8 == with_fp32 == facts
    cube.close()


def test_concurrent_int8_queries_get_what_serial_ones_get(embedder: Any) -> None:
    texts = [f"what did person {i} do in {city}?" for i, city in
             enumerate(["Paris", "Lima", "Oslo", "Kyoto", "Accra", "Quito", "Hanoi", "Perth"])]
    serial = MiniLMEmbedder(embedder.model_dir, query_precision="int8")
    expected = [serial.embed_query(t) for t in texts]
    fresh = MiniLMEmbedder(embedder.model_dir, query_precision="int8")  # its own, empty query cache
    start = threading.Barrier(len(texts))
    got: list[Any] = [None] * len(texts)

    def one(i: int) -> None:
        start.wait()
        for _ in range(3):
            got[i] = fresh.embed_query(texts[i]) if _ == 0 else fresh.embed_queries([texts[i]])[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for row, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(row, want, atol=1e-6)


def test_the_int8_layers_are_prepared_once_when_many_threads_ask_at_once(embedder: Any) -> None:
    model = minilm.TorchBert(embedder.model_dir)  # a private copy: nobody has asked it for int8 yet
    start = threading.Barrier(8)
    seen: list[Any] = []

    def one() -> None:
        start.wait()
        seen.append(model.int8_linears())

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(seen) == 8 and seen[0] is not None and all(s is seen[0] for s in seen)


def test_the_micro_batcher_gives_each_caller_its_lone_int8_row(int8: MiniLMEmbedder) -> None:
    """The batcher embeds queued texts together: each caller's row must be the one its text gets alone
    (int8 activations are scaled per token and attention runs per text; one activation scale per call
    made a row depend on its batch: cosine 0.968-0.995)."""
    texts = ["what tea does Alice drink", "who adopted a dog", "when is the marathon", "where is Kyoto",
             "a", "Ünïcödé café ❤️", "what did Melanie paint after the camping trip", "motorbikes"]
    lone = {t: int8.embed_queries([t])[0] for t in ["hold the worker", *texts]}
    entered, release, calls = threading.Event(), threading.Event(), []

    def gate(batch: list[str]) -> np.ndarray:
        calls.append(list(batch))
        if not entered.is_set():
            entered.set()
            assert release.wait(20)
        return int8.embed_queries(batch)

    shared = BatchedEmbedder(int8, gate)
    assert batched(int8).batcher._embed_many == int8.embed_queries  # the service's wrapper batches queries
    got: dict[str, np.ndarray] = {}
    first = threading.Thread(target=lambda: got.__setitem__("hold the worker", shared.embed_query("hold the worker")))
    first.start()
    assert entered.wait(20)
    threads = [threading.Thread(target=lambda t=t: got.__setitem__(t, shared.embed_query(t))) for t in texts]
    for t in threads:
        t.start()
    while len(shared.batcher._queue) < len(texts):
        threading.Event().wait(0.005)
    release.set()
    for t in [first, *threads]:
        t.join(30)
    shared.close()
    assert max(len(c) for c in calls) > 1  # some texts really shared a call
    for text, row in got.items():
        np.testing.assert_allclose(row, lone[text], atol=1e-6, err_msg=text)  # bit for bit here


def test_without_the_int8_product_queries_fall_back_to_fp32_with_one_warning(
        tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(minilm, "_INT8_MATMUL", "_int_mm_removed_upstream")  # the lookup fails as it would then
    link = tmp_path / "minilm"
    link.symlink_to(embedder.model_dir, target_is_directory=True)  # its own shared model: the real one stays int8
    e = MiniLMEmbedder(link, query_precision="int8")
    with caplog.at_level(logging.WARNING, logger="memos_integrations.textual.minilm"):
        rows = [e.embed_query(t) for t in ("what tea does Alice like", "who has a dog")]
        assert e.query_precision_in_use == "fp32"
    assert len([r for r in caplog.records if "int8" in r.getMessage()]) == 1
    assert "_int_mm_removed_upstream" in str(e._model.int8_unavailable)
    np.testing.assert_allclose(np.stack(rows), embedder.embed_documents(["what tea does Alice like", "who has a dog"]),
                               atol=1e-5)


def test_numpy_has_no_int8_path_and_unknown_precisions_are_refused(embedder: Any) -> None:
    e = MiniLMEmbedder(embedder.model_dir, backend="numpy", query_precision="int8")
    assert e.query_precision == "int8" and e.query_precision_in_use == "fp32"
    np.testing.assert_allclose(e.embed_query("tea"), e.embed_documents(["tea"])[0], atol=1e-6)
    with pytest.raises(InvalidInputError, match="query_precision"):
        MiniLMEmbedder(embedder.model_dir, query_precision="int4")
