"""``query_precision="auto"`` (the service's default): int8 queries only where this CPU's int8 product is
cheaper than fp32, measured once per process (textual/minilm.py ``TorchBert.int8_pays``).

Why it matters: on a CPU without int8 dot-product instructions the int8 product falls back to a
reference kernel; on this project's AVX2-only machine an int8 query measured ~280 ms of CPU against
15-18 ms in fp32, so a service asking for int8 unconditionally served every search ~15x slower.
"""

from __future__ import annotations

from typing import Any

import pytest

from memos_integrations.errors import InvalidInputError
from memos_integrations.textual.embed import MiniLMEmbedder

pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_auto_follows_the_measurement_and_an_explicit_choice_is_kept(embedder: Any, monkeypatch: Any) -> None:
    auto = MiniLMEmbedder(embedder.model_dir, query_precision="auto")
    model = auto._model
    assert model.int8_linears() is not None  # this torch has the int8 product
    monkeypatch.setattr(model, "int8_timing", (100, 1000))  # int8 ten times cheaper: used
    assert auto.query_precision_in_use == "int8"
    monkeypatch.setattr(model, "int8_timing", (1000, 100))  # ten times dearer: fp32
    assert auto.query_precision_in_use == "fp32"
    monkeypatch.setattr(model, "int8_timing", (900, 1000))  # barely cheaper: not worth its rounding
    assert auto.query_precision_in_use == "fp32"
    assert auto.query_precision == "auto"
    assert MiniLMEmbedder(embedder.model_dir, query_precision="int8").query_precision_in_use == "int8"
    assert MiniLMEmbedder(embedder.model_dir, query_precision="fp32").query_precision_in_use == "fp32"


def test_the_measurement_runs_once_and_auto_embeds_what_it_chose(embedder: Any, monkeypatch: Any) -> None:
    auto = MiniLMEmbedder(embedder.model_dir, query_precision="auto")
    model = auto._model
    monkeypatch.setattr(model, "int8_timing", None)
    first = model.int8_pays()
    timing = model.int8_timing
    assert timing is not None and all(t > 0 for t in timing)
    assert model.int8_pays() == first and model.int8_timing is timing  # not measured again
    chosen = MiniLMEmbedder(embedder.model_dir, query_precision=auto.query_precision_in_use)
    q = "What did Melanie paint after the camping trip?"
    assert (auto.embed_query(q) == chosen.embed_query(q)).all()


def test_auto_on_the_numpy_backend_is_fp32_and_an_unknown_precision_names_auto(embedder: Any) -> None:
    e = MiniLMEmbedder(embedder.model_dir, backend="numpy", query_precision="auto")
    assert e.query_precision_in_use == "fp32"
    with pytest.raises(InvalidInputError, match="auto"):
        MiniLMEmbedder(embedder.model_dir, query_precision="int4")
