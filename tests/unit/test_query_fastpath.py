"""The lean int8 query forward (textual/int8_fast.py) computes the reference pass's vectors bit for bit.

What must hold: on hostile texts (empty, one character, past the 256 tokens the model reads,
non-ASCII, repeated) the lean pass gives exactly the reference ``TorchBert._forward(ids, int8)`` row
for each text, alone and in any batch, in any order; switching it off restores the reference; the
fp32 document path never goes through it. benchmarks/bench_query_embed.py checks the same on the 762
LoCoMo dev questions.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from memos_integrations.textual import minilm
from memos_integrations.textual.embed import MiniLMEmbedder
from tests.int8_exact import exact_int_mm

pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "", " ", "?", "a", "tea", "tea", "I", "ok.",
    "When did Caroline go to the LGBTQ support group?",
    "What did Melanie paint after the camping trip in July 2023?",
    "Ünïcödé: où est le café? 日本語のテキスト ❤️ Привет",
    "word " * 400 + "and a tail the model never reads",
    "what tea does Alice drink", "who adopted a dog", "when is the marathon", "where is Kyoto",
    "Would Caroline still want to pursue counseling as a career if she hadn't received support growing up?",
    "x" * 300, "1 2 3 4 5 6 7 8 9 10", "\t\n", "🙂" * 20, "Dr. O'Neil-Smith's e-mail: a@b.co (urgent!!)",
    "What are Melanie's pets' names?", "How long has Caroline had her current group of friends for?",
    "When is Melanie planning on going camping?", "What fields would Caroline be likely to pursue in her education?",
    "did he", "What is the name of the band John saw live in Tokyo and what instrument does the drummer play?",
]


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.fixture(scope="module")
def int8(embedder: Any) -> MiniLMEmbedder:
    e = MiniLMEmbedder(embedder.model_dir, query_precision="int8")
    assert e.query_precision_in_use == "int8"
    return e


@pytest.fixture(scope="module")
def reference(int8: MiniLMEmbedder) -> np.ndarray:
    """Each text's reference row alone, its int8 products in float64 (tests/int8_exact.py: the same int32
    matrices, ~10x faster here). The tests after the first run the real ``torch._int_mm`` and compare with
    these rows (texts 8, 9-12, 11 (256 tokens), 16-18): the two kernels' agreement is checked here too."""
    model = int8._model
    model.int8_fast = False
    try:
        with exact_int_mm(model):
            return np.stack([int8.embed_queries([t])[0] for t in TEXTS])
    finally:
        model.int8_fast = True


def test_the_lean_pass_gives_each_text_its_reference_row_alone_and_in_any_batch(
        int8: MiniLMEmbedder, reference: np.ndarray) -> None:
    assert int8._model.int8_fast
    with exact_int_mm(int8._model):
        alone = np.stack([int8.embed_queries([t])[0] for t in TEXTS])
        np.testing.assert_array_equal(bits(alone), bits(reference))
        np.testing.assert_array_equal(bits(int8.embed_queries(TEXTS)), bits(reference))  # one call: batches of 16
        rng = random.Random(4)
        for _ in range(6):
            idx = rng.sample(range(len(TEXTS)), rng.randint(2, 8))
            got = int8.embed_queries([TEXTS[i] for i in idx])
            np.testing.assert_array_equal(bits(got), bits(reference[idx]), err_msg=str(idx))
    assert int8._model._fast.matmul is int8._model.int8_linears().matmul  # the real product again


def test_the_lean_pass_is_what_runs_and_the_reference_stays_callable(int8: MiniLMEmbedder, reference: np.ndarray) -> None:
    model = int8._model
    ids = [model.tokenizer.encode(TEXTS[8]).ids, model.tokenizer.encode(TEXTS[11]).ids]
    with model.torch.inference_mode():
        lean = model._forward(ids, model.int8_linears())
        assert model._fast is not None and model._fast.int8 is model.int8_linears()  # built once, for these layers
        model.int8_fast = False
        try:
            ref = model._forward(ids, model.int8_linears())
        finally:
            model.int8_fast = True
    np.testing.assert_array_equal(bits(lean), bits(ref))
    np.testing.assert_array_equal(bits(lean), bits(reference[[8, 11]]))


def test_documents_never_take_the_int8_lean_pass(int8: MiniLMEmbedder, embedder: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    docs = TEXTS[8:14]
    want = embedder.embed_documents(docs)

    def refuse(*a: Any, **kw: Any) -> Any:
        raise AssertionError("a document went through the int8 lean pass")

    from memos_integrations.textual import int8_fast

    monkeypatch.setattr(int8_fast.Int8QueryEncoder, "__call__", refuse)
    np.testing.assert_array_equal(bits(int8.embed_documents(docs)), bits(want))
    assert minilm.TorchBert.int8_fast is True  # the class default: every loaded model runs the lean pass


def test_int8_rows_do_not_depend_on_the_thread_count_and_int8_thread_restores_it(
        int8: MiniLMEmbedder, embedder: Any, reference: np.ndarray) -> None:
    """The embedding process runs int8 queries on one torch thread (int8_thread): that is only sound if
    their rows are the same at any count, and only harmless if the count comes back for documents."""
    import torch

    from memos_integrations.textual.int8_fast import int8_thread

    fp32 = MiniLMEmbedder(embedder.model_dir, query_precision="fp32")
    torch.set_num_threads(2)
    try:
        # long texts (> 32768 activations per op) so ATen's own loops split between the two threads too
        np.testing.assert_array_equal(bits(int8.embed_queries(TEXTS[9:12])), bits(reference[9:12]))
        with int8_thread(int8):
            assert torch.get_num_threads() == 1
            np.testing.assert_array_equal(bits(int8.embed_queries(TEXTS[16:18])), bits(reference[16:18]))
        assert torch.get_num_threads() == 2
        with int8_thread(fp32):  # fp32 sums may depend on the count: left as configured
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), int8_thread(int8):
            raise RuntimeError("a failing pass")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
