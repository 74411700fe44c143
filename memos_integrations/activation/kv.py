"""Tensor-level helpers over transformers' ``DynamicCache``: fork, size, flatten, rebuild.

Part of activation memory (``activation/``); the only module that knows how a cache is laid out.
The manager (:mod:`.memory`) and the disk store (:mod:`.store`) speak in these terms.

Why forks can share tensors: ``DynamicLayer.update`` grows a layer with ``torch.cat`` into *new*
tensors and ``crop`` slices, so nothing ever writes into a tensor a fork was built from. A fork is
therefore a new ``DynamicCache`` whose layers hold (views of) the stored tensors: O(1) in memory and
time, and the stored cache is never mutated by the ``generate``/forward call that receives the
fork. Other layer kinds (sliding window, static, quantised, linear attention) may rewrite storage or
drop tokens, so caches containing them are refused and the turn is recomputed.
"""

from __future__ import annotations

from typing import Any

from ..errors import CubeCorruptedError, ModelMismatchError


class UnsupportedCacheError(ModelMismatchError):
    """The model's cache layout cannot be reused safely (sliding window, static or linear-attention layers)."""


def _dynamic_layer_type() -> type:
    from transformers.cache_utils import DynamicLayer

    return DynamicLayer


def check_supported(cache: Any) -> None:
    """Raise :class:`UnsupportedCacheError` unless every layer of ``cache`` is a plain ``DynamicLayer``."""
    dynamic = _dynamic_layer_type()
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise UnsupportedCacheError(
            f"{type(cache).__name__} is not a transformers Cache; pass the model's DynamicCache")
    for layer in layers:
        if type(layer) is not dynamic:
            raise UnsupportedCacheError(
                f"cache layer {type(layer).__name__} cannot be forked safely; prefix reuse needs a model "
                "whose DynamicCache holds only full-attention DynamicLayer layers")


def seq_len(cache: Any) -> int:
    """Number of token positions the cache covers."""
    return int(cache.get_seq_length())


def nbytes(cache: Any) -> int:
    """Bytes held by the cache's key and value tensors."""
    total = 0
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False):
            total += layer.keys.numel() * layer.keys.element_size()
            total += layer.values.numel() * layer.values.element_size()
    return total


def new_cache(config: Any) -> Any:
    """An empty ``DynamicCache`` laid out for ``config`` (one layer per decoder layer)."""
    from transformers import DynamicCache

    return DynamicCache(config=config)


def forward(model: Any, input_ids: Any, cache: Any, *, logits_to_keep: int = 1) -> Any:
    """One forward pass that grows ``cache`` in place; returns the model output (``.logits``).

    The one place forward calls name the cache, through the current keyword (``cache=``;
    ``past_key_values=`` is deprecated in transformers 5.x and removed in 5.40). Callers hold
    ``torch.no_grad()``.
    """
    return model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=logits_to_keep)


def fork(cache: Any, n_tokens: int, config: Any) -> Any:
    """A new cache covering the first ``n_tokens`` of ``cache``, sharing its tensors (see module doc)."""
    check_supported(cache)
    if not 0 < n_tokens <= seq_len(cache):
        raise ValueError(f"cannot fork {n_tokens} tokens from a cache of {seq_len(cache)}")
    out = new_cache(config)
    if len(out.layers) != len(cache.layers):
        raise ModelMismatchError(
            f"cache has {len(cache.layers)} layers but the model has {len(out.layers)}; "
            "it was made by another model")
    check_supported(out)
    for src, dst in zip(cache.layers, out.layers, strict=True):
        dst.lazy_initialization(src.keys, src.values)
        dst.keys = src.keys[..., :n_tokens, :]
        dst.values = src.values[..., :n_tokens, :]
    return out


def to_tensors(cache: Any, n_tokens: int | None = None) -> dict[str, Any]:
    """Flatten to ``{"k.<layer>": tensor, "v.<layer>": tensor}`` (contiguous, on CPU) for safetensors."""
    check_supported(cache)
    n = seq_len(cache) if n_tokens is None else n_tokens
    out: dict[str, Any] = {}
    for i, layer in enumerate(cache.layers):
        out[f"k.{i}"] = layer.keys[..., :n, :].detach().to("cpu").contiguous()
        out[f"v.{i}"] = layer.values[..., :n, :].detach().to("cpu").contiguous()
    return out


def from_tensors(tensors: dict[str, Any], config: Any, *, n_tokens: int, dtype: Any,
                 device: Any) -> Any:
    """Rebuild a cache from :func:`to_tensors` output, validating it against the model's layout.

    Raises :class:`CubeCorruptedError` when tensors are missing or inconsistent, and
    :class:`ModelMismatchError` when they do not fit the model (layer count, heads, head size, dtype).
    """
    out = new_cache(config)
    check_supported(out)
    n_layers = len(out.layers)
    if set(tensors) != {f"{kv}.{i}" for kv in "kv" for i in range(n_layers)}:
        raise ModelMismatchError(
            f"cache file holds {len(tensors) // 2} layers but the model has {n_layers}; "
            "it was made by another model")
    text_cfg = config.get_text_config(decoder=True)
    heads = getattr(text_cfg, "num_key_value_heads", None) or getattr(text_cfg, "num_attention_heads", None)
    for i, layer in enumerate(out.layers):
        k, v = tensors[f"k.{i}"], tensors[f"v.{i}"]
        if k.dim() != 4 or k.shape[:3] != v.shape[:3] or k.shape[2] != n_tokens:
            raise CubeCorruptedError(
                f"layer {i} of the cache has shape {tuple(k.shape)}, expected (1, heads, {n_tokens}, dim); "
                "delete the cache entry (ActivationMemory.drop) and let the turn recompute")
        if heads is not None and k.shape[1] != heads:
            raise ModelMismatchError(
                f"cache has {k.shape[1]} key/value heads per layer, the model has {heads}")
        if k.dtype != dtype:
            raise ModelMismatchError(f"cache dtype {k.dtype} differs from the model's {dtype}")
        k, v = k.to(device), v.to(device)
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v
    return out
