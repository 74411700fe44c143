"""Distillation: train a LoRA adapter on a user's memories (the write path of parametric memory).

Part of parametric memory (``parametric/``). :class:`DistillConfig` is what users configure;
:func:`train_lora` is the plain causal-LM training loop (next-token loss on the memory texts, AdamW,
a tqdm progress bar, a per-step loss curve); :func:`mean_loss` measures a model on texts, which is
how tests and notebooks show that an adapter learned the user's memories and little else.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from ..errors import InvalidInputError


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

    def lora_config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


PRESET_QUICK = DistillConfig(rank=4, epochs=4)
PRESET_DEFAULT = DistillConfig()


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


def train_lora(peft_model: Any, tokenizer: Any, texts: Sequence[str], config: DistillConfig, *,
               progress: bool = True, desc: str = "distill") -> list[float]:
    """Train the active (trainable) adapter of ``peft_model`` on ``texts``; returns the loss per step."""
    import torch
    from tqdm import tqdm

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise InvalidInputError("there are no memories to distill; add some first")
    device = next(peft_model.parameters()).device
    params = [p for p in peft_model.parameters() if p.requires_grad]
    if not params:
        raise InvalidInputError("the model has no trainable adapter parameters")
    rng = random.Random(config.seed)
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(texts) / config.batch_size)
    curve: list[float] = []
    peft_model.train()
    try:
        with tqdm(total=config.epochs * steps_per_epoch, desc=desc, disable=not progress) as bar:
            for _ in range(config.epochs):
                order = texts[:]
                rng.shuffle(order)
                for start in range(0, len(order), config.batch_size):
                    chunk = order[start:start + config.batch_size]
                    ((ids, mask, labels),) = _batches(tokenizer, chunk, config.max_length, device)
                    loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    curve.append(round(loss.item(), 5))
                    bar.set_postfix(loss=f"{curve[-1]:.3f}")
                    bar.update(1)
    finally:
        peft_model.eval()
    return curve
