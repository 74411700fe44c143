"""Adapter routing by relevance and the recall training options (issue 12, item 4), on tiny random
models and the real MiniLM embedder: a user's adapter runs only for requests about what it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from memos_integrations.errors import InvalidInputError, ModelMismatchError  # noqa: E402
from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm  # noqa: E402
from memos_integrations.parametric import DistillConfig, ParametricMemory  # noqa: E402
from memos_integrations.parametric.distill import _lr_factor, _pair_batch, replay_targets  # noqa: E402
from memos_integrations.parametric.manifest import read_manifest  # noqa: E402
from memos_integrations.parametric.routing import MAX_SENTENCES, AdapterRouter, calibrate, sentences  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FACTS = ["Maya's dog is a beagle named Biscuit.", "Maya plays the cello in a community orchestra.",
         "Maya is allergic to peanuts."]
TINY = DistillConfig(rank=2, epochs=1, learning_rate=1e-3, views=["text"])


def test_config_refuses_unknown_views_and_schedules() -> None:
    with pytest.raises(ValidationError, match="unknown distill views"):
        DistillConfig(views=["text", "summary"])
    with pytest.raises(ValidationError, match="unknown distill views"):
        DistillConfig(views=[])
    with pytest.raises(ValidationError, match="schedule"):
        DistillConfig(schedule="linear")
    with pytest.raises(ValidationError):
        DistillConfig(replay_batch=0)
    assert _lr_factor("cosine", 0, 10) == pytest.approx(1.0) and _lr_factor("cosine", 10, 10) == pytest.approx(0.1)
    assert _lr_factor("constant", 7, 10) == 1.0


def test_qa_only_views_without_qa_pairs_say_what_to_pass(tmp_path: Path) -> None:
    pm = ParametricMemory(tmp_path / "adapters")
    pm.bind(tiny_causal_lm(), byte_tokenizer())
    with pytest.raises(InvalidInputError, match="qa="):
        pm.distill("maya", texts=FACTS, config=DistillConfig(views=["qa"]), progress=False)
    assert pm.adapters() == []  # nothing half-written


def test_replay_prompts_become_chat_sequences_of_the_base_models_own_answers() -> None:
    from peft import get_peft_model

    tok = byte_tokenizer()
    model = get_peft_model(tiny_causal_lm(), TINY.lora_config())
    config = DistillConfig(kl_weight=1.0, replay_texts=["a b c", "d e f"], replay_prompts=["What is 2+2?"],
                           replay_batch=2)
    chunks = replay_targets(model, tok, config, "cpu")
    assert [c[0].shape[0] for c in chunks] == [2, 1]  # 3 sequences in chunks of 2
    ids, mask, logp = chunks[1]
    assert tok.decode(ids[0][mask[0].bool()].tolist()).startswith(str(tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True)))
    assert torch.allclose(logp.exp().sum(-1), torch.ones(logp.shape[:2]), atol=1e-4)
    # the answer-only mask: labels start after the prompt
    _, _, labels = _pair_batch(tok, [("user: q\nassistant:", " Biscuit")], 64, "cpu")
    assert tok.decode(labels[0][labels[0] != -100].tolist()).startswith(" Biscuit")


def test_sentences_split_a_mixed_request() -> None:
    assert sentences("What is the capital of France? And what did Maya call her dog?") == [
        "What is the capital of France?", "And what did Maya call her dog?"]
    assert sentences("  ") == [] and sentences("one line") == ["one line"]
    huge = sentences("Hello there. " * 100_000)  # hostile: a huge request costs a bounded number of embeddings
    assert len(huge) == MAX_SENTENCES


def test_a_broken_embedder_is_refused_clearly() -> None:
    class Broken:
        def embed_documents(self, texts: list[str]) -> Any:
            import numpy as np

            return np.zeros((1, 4))  # one vector whatever the number of texts

    with pytest.raises(InvalidInputError, match="embedder returned"):
        AdapterRouter(Broken()).score(["a", "b"], "c")
    with pytest.raises(InvalidInputError, match="embed_documents"):
        AdapterRouter(object())


@pytest.fixture(scope="module")
def router(embedder: Any) -> AdapterRouter:
    r = AdapterRouter(embedder)
    positives = ["What is the name of Maya's beagle?", "Which instrument does Maya play?",
                 "What is Maya allergic to?", "Does Maya own a dog?"]
    negatives = ["What is the capital of Japan?", "How many days are in a week?", "Who painted the Mona Lisa?",
                 "What gas do plants take in from the air?"]
    r.threshold, accuracy = calibrate(r, FACTS, positives, negatives)
    assert accuracy == 1.0
    return r


def test_router_sends_questions_about_the_memories_to_the_adapter(router: AdapterRouter) -> None:
    def applies(q: str) -> bool:
        return router.score(FACTS, q) >= router.threshold

    assert applies("What did Maya call her dog?") and applies("Which food must Maya avoid?")
    assert not applies("Who wrote Romeo and Juliet?") and not applies("What is two plus two?")
    assert applies("Who wrote Romeo and Juliet? Also, what did Maya call her dog?")  # mixed: the user part wins
    assert router.score([], "anything") == -1.0 and router.score(FACTS, "") == -1.0
    with pytest.raises(InvalidInputError, match="threshold"):
        AdapterRouter(router.embedder, threshold=2.0)
    with pytest.raises(InvalidInputError, match="positive and negative"):
        calibrate(router, FACTS, [], ["x"])


def test_runtime_routes_per_request_and_keeps_refusing_foreign_adapters(tmp_path: Path,
                                                                      router: AdapterRouter) -> None:
    from memos_integrations.models import LocalRuntime

    tok = byte_tokenizer()
    pm = ParametricMemory(tmp_path / "adapters", max_resident=2)
    pm.bind(tiny_causal_lm(), tok)
    name = pm.distill("maya", texts=FACTS, config=TINY, progress=False).name
    assert read_manifest(tmp_path / "adapters" / name).route_texts == FACTS  # kept on disk for the router
    runtime = LocalRuntime(pm.registry.base_model, tok, para_mem=pm, max_new_tokens=2)  # type: ignore[union-attr]
    ask = [{"role": "user", "content": "What did Maya call her dog?"}]
    general = [{"role": "user", "content": "Who wrote Romeo and Juliet?"}]
    assert runtime.generate(general, user_id="maya").adapter == name  # off (default): today's behaviour
    pm.use_router(router)
    assert runtime.generate(ask, user_id="maya").adapter == name
    assert runtime.generate(general, user_id="maya").adapter is None  # the base model, as a user without one
    assert pm.route("maya") is not None  # no request text (a batch call): the adapter applies
    assert pm.merge([name], [1.0], "team").route_texts == FACTS  # a team adapter routes on its sources' texts
    pm.assign("bob", "team")
    assert pm.route("bob", "Who wrote Romeo and Juliet?") is None and pm.route("bob", "Is Maya allergic?") is not None
    assert pm.route("carol", "What did Maya call her dog?") is None  # no adapter of their own: base model
    from memos_integrations.langchain import MemOSChatModel

    llm = MemOSChatModel(runtime=runtime, user_id="maya", max_tokens=2)
    assert llm.invoke("Who wrote Romeo and Juliet?").response_metadata["memos"]["adapter"] is None
    assert llm.invoke("Which food must Maya avoid?").response_metadata["memos"]["adapter"] == name
    with pytest.raises(InvalidInputError, match="AdapterRouter"):
        pm.use_router("yes")
    # an adapter distilled on other weights stays refused, router or not
    other = ParametricMemory(tmp_path / "adapters")
    other.use_router(router)
    other.bind(tiny_causal_lm(seed=1), tok)
    assert name in other.refused and other.route("maya", "What did Maya call her dog?") is None
    with pytest.raises(ModelMismatchError):
        other.registry.register(tmp_path / "adapters" / name)  # type: ignore[union-attr]
