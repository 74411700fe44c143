"""Embedders: the offline default, and any framework Embeddings object wrapped for a cube."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memos_integrations import MemCube
from memos_integrations.config import EmbedderConfig
from memos_integrations.errors import EmbedderMismatchError, InvalidInputError
from memos_integrations.textual.embed import LangChainEmbedder, MiniLMEmbedder, as_embedder, from_config


def test_minilm_embeddings_are_normalised_and_meaningful(embedder) -> None:  # type: ignore[no-untyped-def]
    m = embedder.embed_documents(["The cat sat on the mat.", "A kitten rested on the rug.", "Quarterly tax invoices."])
    assert m.shape == (3, 384) and m.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)
    assert m[0] @ m[1] > m[0] @ m[2] + 0.2
    assert embedder.embed_documents([]).shape == (0, 384)
    np.testing.assert_allclose(embedder.embed_query("The cat sat on the mat."), m[0], atol=1e-5)


def test_fingerprint_is_stable_across_instances(embedder) -> None:  # type: ignore[no-untyped-def]
    assert MiniLMEmbedder().fingerprint == embedder.fingerprint
    assert len(embedder.fingerprint) == 16


def test_as_embedder_and_config_registry(embedder) -> None:  # type: ignore[no-untyped-def]
    assert as_embedder(embedder) is embedder
    assert isinstance(from_config(EmbedderConfig()), MiniLMEmbedder)
    with pytest.raises(InvalidInputError, match="cannot use"):
        as_embedder(42)
    with pytest.raises(InvalidInputError, match="model="):
        from_config(EmbedderConfig(provider="sentence-transformers"))


def test_framework_embeddings_wrapper(tmp_path: Path) -> None:
    """Any LangChain ``Embeddings`` becomes a cube embedder (normalised, fingerprinted, dimension probed)."""
    from langchain_core.embeddings import DeterministicFakeEmbedding

    fake = DeterministicFakeEmbedding(size=32)
    wrapped = LangChainEmbedder(fake)
    assert wrapped.dimension == 32 and wrapped.name == "langchain:DeterministicFakeEmbedding"
    docs = wrapped.embed_documents(["alpha", "beta"])
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    raw = np.asarray(fake.embed_documents(["alpha"])[0])
    np.testing.assert_allclose(docs[0], raw / np.linalg.norm(raw), atol=1e-6)
    np.testing.assert_allclose(wrapped.embed_query("alpha"), docs[0], atol=1e-6)
    assert LangChainEmbedder(DeterministicFakeEmbedding(size=32)).fingerprint == wrapped.fingerprint

    # a cube built on it records it, reopens with an equal one, and refuses another
    with MemCube.init_from_dir(tmp_path / "lc", embedder=fake) as cube:
        item = cube.add(memory="alpha")[0]
        assert cube.search("alpha", top_k=1)[0].item.id == item.id
        assert cube.stats()["embedder"] == "langchain:DeterministicFakeEmbedding"
    with MemCube.open(tmp_path / "lc", embedder=DeterministicFakeEmbedding(size=32)) as again:
        assert again.get(item.id).text == "alpha"
    with pytest.raises(EmbedderMismatchError):
        MemCube.open(tmp_path / "lc", embedder=DeterministicFakeEmbedding(size=64))
    with pytest.raises(EmbedderMismatchError):
        MemCube.open(tmp_path / "lc")  # the default MiniLM is not what built it


def test_an_embedder_returning_the_wrong_shape_is_caught_before_writing(tmp_path: Path) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    class Shrinking(DeterministicFakeEmbedding):
        def embed_documents(self, texts):  # type: ignore[no-untyped-def,override]
            return [v[:8] for v in super().embed_documents(texts)]

    with MemCube.init_from_dir(tmp_path / "s", embedder=Shrinking(size=16)) as cube:
        with pytest.raises(EmbedderMismatchError, match="8-dim"):
            cube.add(memory="x")
        assert cube.stats()["items"] == 0 and cube.stats()["versions"] == 0
