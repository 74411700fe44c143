"""Distillation for recall (issue 12, item 4) on a tiny random model: question/answer and chat views
(loss on the answer only), a KL term against the base model on replay text, and early stopping on
held-out QA pairs that keeps the best epoch's weights."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from memos_integrations.errors import InvalidInputError  # noqa: E402
from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm  # noqa: E402
from memos_integrations.parametric import DistillConfig, ParametricMemory  # noqa: E402
from memos_integrations.parametric.distill import REPLAY, _pair_batch, build_examples  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FACTS = ["Maya's dog is called Biscuit.", "Maya plays the cello.", "Maya lives in Murano.", "Maya likes teal."]
QA = [("Dog's name?", "Biscuit"), ("Instrument?", "cello"), ("Home?", "Murano"), ("Colour?", "teal")]


def test_views_put_the_loss_on_the_answer_only() -> None:
    tok = byte_tokenizer()
    examples = build_examples(tok, FACTS[:1], QA[:1], ["text", "qa", "chat"])
    assert [p == "" for p, _ in examples] == [True, False, False]
    ids, _, labels = _pair_batch(tok, examples[2:3], 256, "cpu")  # the qa view
    answer = labels[0][labels[0] != -100].tolist()
    assert tok.decode(answer) == "Biscuit<|im_end|>"  # the question and template are context, not targets
    with pytest.raises(InvalidInputError, match="views"):
        build_examples(tok, FACTS, QA, ["text", "summary"])


def distill(tmp_path: Path, config: DistillConfig) -> tuple[ParametricMemory, list[float], str]:
    pm = ParametricMemory(tmp_path / "adapters", max_resident=2)
    pm.bind(tiny_causal_lm(), byte_tokenizer())
    manifest = pm.distill("maya", texts=FACTS, qa=QA, config=config, progress=False)
    return pm, manifest.loss_curve, manifest.name


def test_kl_replay_keeps_generic_text_closer_to_the_base_model(tmp_path: Path) -> None:
    common = {"rank": 8, "epochs": 6, "learning_rate": 2e-2, "views": ["text", "qa"], "batch_size": 4}
    plain, _, a = distill(tmp_path / "plain", DistillConfig(**common))
    base = plain.loss(REPLAY)
    drift_plain = abs(plain.loss(REPLAY, adapter=a) - base)
    kl, _, b = distill(tmp_path / "kl", DistillConfig(**common, kl_weight=5.0))
    drift_kl = abs(kl.loss(REPLAY, adapter=b) - base)
    assert drift_kl < drift_plain


def test_early_stopping_keeps_the_best_held_out_epoch(tmp_path: Path) -> None:
    config = DistillConfig(rank=8, epochs=40, learning_rate=5e-2, views=["qa"], holdout=1, patience=1, batch_size=4)
    pm, curve, name = distill(tmp_path, config)
    steps_per_epoch = 1  # 3 training QA pairs, batch 4
    assert len(curve) < config.epochs * steps_per_epoch  # it stopped early
    assert pm.loss(["Biscuit"], adapter=name) == pm.loss(["Biscuit"], adapter=name)  # the adapter loads and runs
