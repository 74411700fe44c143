"""Tiny random-weight models and an offline byte-level tokenizer, for tests, notebooks and docs.

Part of the local-model layer (``models/``). No model hub is needed: the tokenizer maps every UTF-8
byte to one token (plus ChatML-style special tokens and a chat template), and the models are built
from transformers configs with seeded random weights. Their output is noise; they exist to exercise
the cache and adapter machinery exactly as a real checkpoint would. Real users load a checkpoint
with :meth:`memos_integrations.models.LocalRuntime.from_pretrained`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, require

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` with one token per byte (ids 0-255) and 3 special tokens (256-258)."""
    require("transformers", "local")
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS])  # ids 256, 257, 258
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _bytes_to_unicode() -> list[str]:
    # The GPT-2 byte-to-printable-character table, in byte order.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs, strict=True))
    return [chr(table[b]) for b in range(256)]


_ARCHS = ("llama", "qwen2", "gpt2")


def tiny_config(arch: str = "llama", **overrides: Any) -> Any:
    """A transformers config of a ~100k-parameter model over :func:`byte_tokenizer`'s 259 tokens."""
    require("transformers", "local")
    import transformers

    common: dict[str, Any] = {"vocab_size": 259, "bos_token_id": None, "eos_token_id": 258,
                              "pad_token_id": 256}
    cfg: Any
    if arch == "llama":
        cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=2048, **common)
    elif arch == "qwen2":
        cfg = transformers.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2,
                                       max_position_embeddings=2048, **common)
    elif arch == "gpt2":
        cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=2048, **common)
    else:
        raise InvalidInputError(f"unknown tiny architecture {arch!r}; use one of {_ARCHS}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_causal_lm(arch: str = "llama", *, seed: int = 0, dtype: Any = None, **overrides: Any) -> Any:
    """A seeded random-weight causal LM in eval mode (same ``seed`` and ``arch`` give the same weights)."""
    require("torch", "local")
    import torch
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(arch, **overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def save_tiny_checkpoint(path: str | Path, arch: str = "llama", *, seed: int = 0) -> Path:
    """Write a tiny random model and the byte tokenizer to ``path``, loadable by ``from_pretrained``."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tiny_causal_lm(arch, seed=seed).save_pretrained(out)
    byte_tokenizer().save_pretrained(out)
    return out
