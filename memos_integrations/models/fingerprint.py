"""Model fingerprints: the identity that KV caches and LoRA adapters are bound to.

Part of the local-model layer (``models/``). Activation memory keys every cache by the fingerprint of
the model that produced it, and parametric memory records the base model fingerprint in every
adapter manifest, so a cache or adapter made by another model (or another dtype) is refused instead
of silently producing garbage.

A fingerprint hashes the model class, the config keys that change what the network computes, the
parameter dtype and a sample of every base weight tensor (its shape and first/last elements). Keys
that only describe how a checkpoint was loaded or saved (``quantization_config`` of a GGUF file,
``architectures``, ``torch_dtype``, the attention kernel, token ids, label maps) are left out, so the
same weights loaded from a GGUF file and from the folder it was converted to share one identity. Sampling keeps it to a few milliseconds on a 250M model
while still separating two random initialisations or two fine-tunes of one config. LoRA weights are
excluded: an adapter is a separate identity (see :func:`adapter_digest`).
"""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import Any

_SAMPLE = 32  # elements hashed from each end of every tensor
# Config keys that describe loading, saving or tokenisation, not the computation: the same weights
# loaded another way (GGUF, a saved folder, another attention kernel) keep their identity. The dtype
# is hashed separately, from the parameters themselves.
_LOADER_KEYS = {"_name_or_path", "_model_name_or_path", "transformers_version", "torch_dtype", "dtype",
                "_commit_hash", "architectures", "quantization_config", "attn_implementation",
                "_attn_implementation", "_attn_implementation_internal", "use_cache", "output_attentions",
                "output_hidden_states", "return_dict", "id2label", "label2id", "problem_type",
                "chunk_size_feed_forward", "tokenizer_class", "task_specific_params", "finetuning_task",
                "prefix", "torchscript", "_experts_implementation"}


def compute_config(config: Any) -> dict[str, Any]:
    """The part of a model config that changes what the network computes (see the module doc)."""
    return {k: v for k, v in config.to_dict().items()
            if k not in _LOADER_KEYS and not k.endswith("token_id") and not k.endswith("token_ids")}
_CACHE: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def base_model_of(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or ``model`` itself)."""
    if type(model).__module__.startswith("peft."):
        # Not get_base_model(): it needs an active adapter, and a wrapper may have none.
        return model.base_model.model
    return model


def model_dtype(model: Any) -> str:
    """The floating dtype of the model's weights as a short string, e.g. ``"float32"``."""
    return str(base_model_of(model).dtype).removeprefix("torch.")


def model_fingerprint(model: Any, *, refresh: bool = False) -> str:
    """A stable hex id of ``model``'s architecture, dtype and base weights (LoRA layers excluded).

    The value is memoised per model object; pass ``refresh=True`` after changing base weights in
    place (for example after ``merge_and_unload``).
    """
    base = base_model_of(model)
    if not refresh and base in _CACHE:
        return _CACHE[base]
    import torch

    h = hashlib.sha256(type(base).__name__.encode())
    h.update(json.dumps(compute_config(base.config), sort_keys=True, default=str).encode())
    h.update(model_dtype(base).encode())
    with torch.no_grad():
        for name, param in sorted(base.named_parameters(), key=lambda kv: kv[0]):
            if "lora_" in name:
                continue
            # PEFT renames wrapped layers "x.base_layer.weight"; normalise so wrapping keeps the id.
            h.update(name.replace(".base_layer", "").encode())
            h.update(str(tuple(param.shape)).encode())
            flat = param.detach().reshape(-1)
            sample = torch.cat([flat[:_SAMPLE], flat[-_SAMPLE:]]).float().cpu()
            h.update(sample.numpy().tobytes())
    fp = h.hexdigest()[:32]
    _CACHE[base] = fp
    return fp


def adapter_digest(state: dict[str, Any]) -> str:
    """A hex id of an adapter's weights (a state dict of tensors), used to key caches made with it."""
    import torch

    h = hashlib.sha256()
    with torch.no_grad():
        for name in sorted(state):
            t = state[name].detach().reshape(-1).float().cpu()
            h.update(name.encode())
            h.update(str(tuple(state[name].shape)).encode())
            h.update(torch.cat([t[:_SAMPLE], t[-_SAMPLE:], t.sum().reshape(1)]).numpy().tobytes())
    return h.hexdigest()[:16]
