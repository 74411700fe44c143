"""adv7b: ``query_precision="auto"`` says int8 where int8 pays, but embeds fp32.

``MiniLMEmbedder.embed_queries`` hands ``precision=self._query_precision`` ("auto") to the encoder, whose
``encode`` takes the int8 layers only for ``precision == "int8"``: an "auto" embedder on a CPU where the
int8 product pays (VNNI, AMX: the machines the int8 path was built for) reports ``query_precision_in_use ==
"int8"`` and computes every query in fp32, in process and in the embedding child (which builds its
MiniLMEmbedder with the parent's "auto"). The service's default lost its int8 queries everywhere; the
project's own test passes only because int8 does not pay on this AVX2-only machine. The late preset reads
``query_precision_in_use`` to decide whether the in-process query is fp32, so it refuses an fp32 query too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from memos_integrations.textual.embed import MiniLMEmbedder

pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

Q = "What did Melanie paint after the camping trip?"


def test_auto_embeds_int8_where_it_says_int8(embedder: Any, monkeypatch: Any) -> None:
    auto = MiniLMEmbedder(embedder.model_dir, query_precision="auto")
    model = auto._model
    assert model.int8_linears() is not None
    monkeypatch.setattr(model, "int8_timing", (100, 1000))  # a CPU where int8 pays (VNNI / AMX)
    assert auto.query_precision_in_use == "int8"
    int8 = MiniLMEmbedder(embedder.model_dir, query_precision="int8").embed_queries([Q])
    fp32 = MiniLMEmbedder(embedder.model_dir, query_precision="fp32").embed_queries([Q])
    assert not np.array_equal(int8, fp32)  # the comparison can fail
    assert np.array_equal(auto.embed_queries([Q]), int8)  # what it says it computes


def test_auto_embeds_fp32_where_int8_does_not_pay(embedder: Any, monkeypatch: Any) -> None:
    auto = MiniLMEmbedder(embedder.model_dir, query_precision="auto")
    monkeypatch.setattr(auto._model, "int8_timing", (1000, 100))
    assert auto.query_precision_in_use == "fp32"
    fp32 = MiniLMEmbedder(embedder.model_dir, query_precision="fp32").embed_queries([Q])
    assert np.array_equal(auto.embed_queries([Q]), fp32)
