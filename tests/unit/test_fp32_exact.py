"""MiniLM's fp32 pass (textual/fp32_exact.py): a text's vector is the same bits alone and in any batch,
on any text (empty, one character, past the 256-token cut, emoji), and within float noise of the padded
reference pass it replaces."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

TEXTS = [
    "", "a", "é", "ok", "Caroline went to the LGBTQ support group on 7 May 2023.",
    "Melanie: I painted a lake sunrise last year! [shares a photo: a painting of a sunrise over a lake]",
    "Eve moved to Tromsø in March 2024 🙂 and took her two cats, Pixel and Ada.",
    "word " * 400,  # cut at 256 tokens
    "What did Melanie paint after the camping trip in July 2023?", "x", "\n\n", "日本語のノート",
]


@pytest.fixture(scope="module")
def model(one_torch_thread: None, embedder: Any) -> Any:
    return embedder._model


def _ids(model: Any) -> list[list[int]]:
    return [model.tokenizer.encode(t).ids for t in TEXTS]


def test_a_texts_vector_is_the_same_bits_alone_and_in_any_batch(model: Any, embedder: Any) -> None:
    alone = np.stack([embedder.embed_documents([t])[0] for t in TEXTS])
    rng = np.random.default_rng(3)
    for size in (2, 3, 5, len(TEXTS)):
        order = rng.permutation(len(TEXTS))
        for start in range(0, len(TEXTS), size):
            pick = order[start : start + size]
            np.testing.assert_array_equal(embedder.embed_documents([TEXTS[i] for i in pick]), alone[pick])
    # the service's other way in: a batch through the model straight (sorted by length, unequal lengths)
    ids = _ids(model)
    with model.torch.inference_mode():
        np.testing.assert_array_equal(model._forward(ids), alone)


def test_the_pass_is_within_float_noise_of_the_padded_reference(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _ids(model)
    with model.torch.inference_mode():
        exact = np.stack([model._forward([i])[0] for i in ids])
        batched_exact = model._forward(ids)
        monkeypatch.setattr(model, "fp32_exact", False)
        reference = np.stack([model._forward([i])[0] for i in ids])
        padded = model._forward(ids)
    assert np.abs(exact - reference).max() < 1e-6
    assert np.abs(batched_exact - padded).max() < 1e-6
    assert np.all(np.abs(np.linalg.norm(exact, axis=1) - 1) < 1e-6)
