"""Distillation: train a LoRA adapter on a user's memories (the write path of parametric memory).

Part of parametric memory (``parametric/``). :class:`DistillConfig` is what users configure;
:func:`train_lora` is the plain causal-LM training loop (next-token loss on the memory texts, AdamW,
a tqdm progress bar, a per-step loss curve); :func:`mean_loss` measures a model on texts, which is
how tests and notebooks show that an adapter learned the user's memories and little else.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, Field, field_validator

from ..errors import InvalidInputError

VIEWS = ("text", "qa", "chat")


class DistillConfig(BaseModel):
    """Training settings for :meth:`ParametricMemory.distill`; stored in the adapter manifest."""

    rank: int = Field(default=8, ge=1, le=256, description="LoRA rank r.")
    alpha: int = Field(default=16, ge=1, description="LoRA alpha (scaling = alpha / rank).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | None = Field(
        default=None, description="Module names to adapt; None uses PEFT's default for the architecture.")
    learning_rate: float = Field(default=2e-3, gt=0, description="AdamW learning rate.")
    epochs: int = Field(default=8, ge=1, description="Passes over the memories.")
    batch_size: int = Field(default=4, ge=1, description="Texts per optimisation step.")
    max_length: int = Field(default=256, ge=8, description="Tokens per text (longer texts are cut).")
    seed: int = Field(default=0, description="Seed for initialisation and shuffling.")
    views: list[str] = Field(
        default_factory=lambda: ["text"],
        description="Training views of each memory: 'text' (next-token loss on the memory), 'qa' (the "
                    "question/answer pairs passed to distill(qa=...), loss on the answer only, in the chat "
                    "template), 'chat' (the memory as the answer to 'What do you know about me?').")
    kl_weight: float = Field(default=0.0, ge=0, description="Weight of a KL term keeping the adapted model's "
                             "next-token distribution on replay text close to the base model's (forgetting).")
    replay_texts: list[str] = Field(default_factory=list, description="Generic text for the KL term "
                                    "(empty: a few built-in sentences).")
    holdout: int = Field(default=0, ge=0, description="QA pairs held out for early stopping: after each epoch "
                         "their answer loss is measured and the best epoch's weights are kept.")
    patience: int = Field(default=2, ge=1, description="Epochs without a better held-out loss before stopping.")
    replay_prompts: list[str] = Field(
        default_factory=list, description="General requests whose answers by the base model (greedy, made "
        "once before training) join the KL replay in the chat template: they keep the adapted model's "
        "answers to requests that are not about the user close to the base model's.")
    replay_batch: int = Field(default=4, ge=1, description="Replay sequences in the KL term of each step "
                              "(the replay set is cycled in chunks of this size).")
    schedule: str = Field(default="constant", description="Learning rate over the run: 'constant' or "
                          "'cosine' (decays to a tenth by the last step).")

    @field_validator("views")
    @classmethod
    def _known_views(cls, views: list[str]) -> list[str]:
        unknown = sorted(set(views) - set(VIEWS))
        if unknown or not views:
            raise InvalidInputError(f"unknown distill views {unknown or views}; use some of {list(VIEWS)}")
        return views

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, schedule: str) -> str:
        if schedule not in ("constant", "cosine"):
            raise InvalidInputError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
        return schedule

    def lora_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


PRESET_QUICK = DistillConfig(rank=4, epochs=4)
PRESET_DEFAULT = DistillConfig()
#: question/answer and chat views, replay KL against the base model, early stopping on held-out QA
PRESET_RECALL = DistillConfig(rank=8, alpha=16, epochs=12, learning_rate=1e-3, batch_size=8,
                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                              views=["text", "qa", "chat"], kl_weight=1.0, holdout=3, patience=3)
REPLAY = [
    "The river winds through the valley before it reaches the sea.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The meeting was moved to Tuesday because several people were travelling.",
    "Paris is the capital of France, and Rome is the capital of Italy.",
]
_CHAT_Q = "What do you know about me?"


def build_examples(tokenizer: Any, texts: Sequence[str], qa: Sequence[tuple[str, str]],
                   views: Sequence[str]) -> list[tuple[str, str]]:
    """``(prompt, completion)`` training examples; the loss is on the completion only."""
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise InvalidInputError(f"unknown distill views {sorted(unknown)}; use 'text', 'qa' or 'chat'")
    out: list[tuple[str, str]] = []
    if "text" in views:
        out += [("", t) for t in texts]
    if "chat" in views:
        out += [chat_example(tokenizer, _CHAT_Q, t) for t in texts]
    if "qa" in views:
        out += [chat_example(tokenizer, q, a) for q, a in qa]
    return out


def chat_example(tokenizer: Any, question: str, answer: str) -> tuple[str, str]:
    """The chat-template prompt for ``question`` (with the assistant header) and ``answer`` as completion."""
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                               add_generation_prompt=True)
        return str(prompt), answer
    return f"user: {question}\nassistant:", " " + answer


def _batches(tokenizer: Any, texts: Sequence[str], max_length: int, device: Any) -> list[tuple[Any, Any, Any]]:
    import torch

    eos = tokenizer.eos_token or ""
    rows = [list(tokenizer(t + eos, add_special_tokens=False)["input_ids"])[:max_length] for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return [(ids.to(device), mask.to(device), labels.to(device))]


def _pair_batch(tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int,
                device: Any) -> tuple[Any, Any, Any]:
    """Right-padded ids, mask and labels of ``(prompt, completion)`` pairs, labels on completions only."""
    import torch

    eos = tokenizer.eos_token or ""
    rows, starts = [], []
    for prompt, completion in pairs:
        head = list(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else []
        tail = list(tokenizer(completion + eos, add_special_tokens=False)["input_ids"])
        rows.append((head + tail)[:max_length])
        starts.append(min(len(head), max_length - 1))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        labels[i, starts[i]: len(r)] = ids[i, starts[i]: len(r)]
    return ids.to(device), mask.to(device), labels.to(device)


def mean_loss(model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int = 256) -> float:
    """Mean next-token cross-entropy of ``model`` on ``texts`` (each scored separately)."""
    import torch

    if not texts:
        raise InvalidInputError("mean_loss needs at least one text")
    device = next(model.parameters()).device
    losses = []
    with torch.no_grad():
        for text in texts:
            ((ids, mask, labels),) = _batches(tokenizer, [text], max_length, device)
            losses.append(float(model(input_ids=ids, attention_mask=mask, labels=labels).loss))
    return sum(losses) / len(losses)


def _lr_factor(schedule: str, step: int, total: int) -> float:
    if schedule == "cosine":
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    return 1.0


def replay_targets(peft_model: Any, tokenizer: Any, config: DistillConfig, device: Any) -> list[tuple[Any, Any, Any]]:
    """The KL replay set: ``(ids, mask, base log-probs)`` chunks of ``config.replay_batch`` sequences.

    The sequences are the generic ``replay_texts`` and, for each of ``replay_prompts``, the prompt in
    the chat template followed by the base model's own greedy answer. The base model's next-token
    log-probabilities are computed once here, with the adapter disabled.
    """
    import torch

    pairs = [("", t) for t in (config.replay_texts or REPLAY)]
    if config.replay_prompts:
        with torch.no_grad(), peft_model.disable_adapter():
            for question in config.replay_prompts:
                prompt, _ = chat_example(tokenizer, question, "")
                ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=device)
                out = peft_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                          do_sample=False, pad_token_id=tokenizer.pad_token_id
                                          if tokenizer.pad_token_id is not None else 0)
                pairs.append((prompt, str(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))))
    chunks = []
    with torch.no_grad(), peft_model.disable_adapter():
        for start in range(0, len(pairs), config.replay_batch):
            ids, mask, _ = _pair_batch(tokenizer, pairs[start:start + config.replay_batch], config.max_length, device)
            logits = peft_model(input_ids=ids, attention_mask=mask).logits.float()
            chunks.append((ids, mask, torch.log_softmax(logits, -1)))
    return chunks


def train_lora(peft_model: Any, tokenizer: Any, texts: Sequence[str], config: DistillConfig, *,
               progress: bool = True, desc: str = "distill",
               qa: Sequence[tuple[str, str]] = (),
               on_epoch: Callable[[int, float | None], None] | None = None) -> list[float]:
    """Train the active (trainable) adapter of ``peft_model``; returns the loss per step.

    The examples are the ``config.views`` of ``texts`` and ``qa``; with ``config.kl_weight`` each step
    adds the KL divergence from the base model (adapter disabled) on replay text; with
    ``config.holdout`` the last QA pairs are held out, and training stops when their answer loss has
    not improved for ``config.patience`` epochs, keeping the best epoch's adapter weights.
    ``on_epoch(epoch, held_out_loss)`` is called after each epoch with the current weights (a
    benchmark measures the trade-off curve along one run with it).
    """
    import torch
    from tqdm import tqdm

    texts = [t for t in texts if t and t.strip()]
    if not texts and not qa:
        raise InvalidInputError("there are no memories to distill; add some first")
    held = list(qa[len(qa) - config.holdout:]) if config.holdout and len(qa) > config.holdout else []
    train_qa = list(qa[: len(qa) - len(held)])
    examples = build_examples(tokenizer, texts, train_qa, config.views)
    held_examples = [chat_example(tokenizer, q, a) for q, a in held]
    if not examples:
        raise InvalidInputError(f"views {config.views} made no training examples: pass question/answer pairs "
                                "(distill(..., qa=[(question, answer), ...])) or add the 'text' view")
    device = next(peft_model.parameters()).device
    params = [p for p in peft_model.parameters() if p.requires_grad]
    if not params:
        raise InvalidInputError("the model has no trainable adapter parameters")
    rng = random.Random(config.seed)
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(examples) / config.batch_size)
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(config.schedule, s, total))
    replay = replay_targets(peft_model, tokenizer, config, device) if config.kl_weight > 0 else []
    curve: list[float] = []
    best: tuple[float, dict[str, Any] | None] = (math.inf, None)
    stale = 0
    peft_model.train()
    try:
        with tqdm(total=total, desc=desc, disable=not progress) as bar:
            for epoch in range(config.epochs):
                order = examples[:]
                rng.shuffle(order)
                for start in range(0, len(order), config.batch_size):
                    ids, mask, labels = _pair_batch(tokenizer, order[start:start + config.batch_size],
                                                    config.max_length, device)
                    loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
                    if replay:
                        r_ids, r_mask, base_logp = replay[len(curve) % len(replay)]
                        logp = torch.log_softmax(peft_model(input_ids=r_ids, attention_mask=r_mask).logits.float(), -1)
                        kl = (base_logp.exp() * (base_logp - logp)).sum(-1)[r_mask.bool()].mean()
                        loss = loss + config.kl_weight * kl
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    curve.append(round(loss.item(), 5))
                    bar.set_postfix(loss=f"{curve[-1]:.3f}")
                    bar.update(1)
                held_loss: float | None = None
                if held_examples:
                    peft_model.eval()
                    with torch.no_grad():
                        ids, mask, labels = _pair_batch(tokenizer, held_examples, config.max_length, device)
                        held_loss = float(peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss)
                    peft_model.train()
                if on_epoch is not None:
                    peft_model.eval()
                    on_epoch(epoch, held_loss)
                    peft_model.train()
                if held_loss is not None:
                    if held_loss < best[0]:
                        best, stale = (held_loss, {n: p.detach().clone() for n, p in peft_model.named_parameters()
                                                   if p.requires_grad}), 0
                    else:
                        stale += 1
                        if stale >= config.patience:
                            break
    finally:
        peft_model.eval()
    if best[1] is not None:  # the best epoch's weights, not the last
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if n in best[1]:
                    p.copy_(best[1][n])
    return curve
