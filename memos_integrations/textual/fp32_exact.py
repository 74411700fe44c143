"""MiniLM's fp32 forward pass with each text's vector independent of its batch, bit for bit.

Why: the service embeds concurrent adds' texts (different users' memories, different cubes) in one
forward pass (``textual/batching.py``, in the embedding child of ``textual/embed_process.py``). The
reference pass (``TorchBert._forward``) pads the batch to its longest text and masks the padding in
attention; the masked softmax then sums over a longer row, and a text's vector came out 1e-7 different
alone and in a batch (31-56 of 64 LoCoMo turns, batches of 2-64). Harmless for recall, but an add's
stored vector then depended on who else was adding at that moment, and ``reindex --reembed`` could not
reproduce what ``add`` stored.

How: tokens are packed (no padding anywhere), the linear layers run on the packed (tokens, hidden)
matrix, and attention runs text by text on that text's own tokens, without a mask: a text's attention is
then the same arithmetic alone or batched. The packed linear layers are row-independent in MKL's GEMM
from 4 rows up (1-3 rows take another kernel: measured, every row count 4-600 and random slices give
the same bits); a pass over fewer than 4 tokens in all is padded with zero rows to 4 for the products,
and those rows are dropped. Embeddings, layer norms, GELU and mean pooling are row-wise. The same
ops as the reference, minus its padding work (a padded id grid, the mask, the boolean gathers and
scatters); vectors are within 4e-7 of it (``tests/unit/test_fp32_exact.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .late import seen
from .packed import PackedEncoder

#: GEMMs with fewer rows than this take a different kernel (its sums may round differently)
MIN_ROWS = 4


class ExactEncoder(PackedEncoder):
    """fp32 MiniLM forward: one unit vector per text of token ids, each a function of its own ids only.

    Args:
        torch: the torch module.
        tw: the model's weights as torch tensors (``TorchBert.tw``).
        layers, heads, eps: the encoder's shape (``TorchBert.layers``, ``.heads``, ``.eps``).
    """

    def __init__(self, torch: Any, tw: dict[str, Any], layers: int, heads: int, eps: float) -> None:
        super().__init__(torch, tw, heads, eps)
        self.layers = []
        for i in range(layers):
            p = f"encoder.layer.{i}."

            def lin(name: str, p: str = p) -> tuple[Any, Any]:
                return tw[p + name + ".weight"], tw[p + name + ".bias"]

            self.layers.append((
                [lin(f"attention.self.{m}") for m in ("query", "key", "value")], lin("attention.output.dense"),
                (tw[p + "attention.output.LayerNorm.weight"], tw[p + "attention.output.LayerNorm.bias"]),
                lin("intermediate.dense"), lin("output.dense"),
                (tw[p + "output.LayerNorm.weight"], tw[p + "output.LayerNorm.bias"]),
            ))

    def _attend(self, q: Any, k: Any, v: Any) -> Any:
        """One text's self-attention over its own tokens: (tokens, hidden) each -> (tokens, hidden)."""
        heads, hd = self.heads, self.head_dim
        q, k, v = (t.reshape(1, -1, heads, hd).transpose(1, 2) for t in (q, k, v))
        return self.F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, self.hidden)

    def __call__(self, batch_ids: list[list[int]]) -> np.ndarray:
        """One unit vector per text (call under ``torch.inference_mode()``)."""
        torch, F, hidden, eps = self.torch, self.F, self.hidden, self.eps
        n = len(batch_ids)
        x, counts = self.embed(batch_ids)
        total = sum(counts)
        extra = MIN_ROWS - total
        if extra > 0:  # zero rows, so the products take the kernel a batch takes; dropped before attention
            x = torch.cat([x, x.new_zeros((extra, hidden))])
        for qkv, out, norm1, inter, down, norm2 in self.layers:
            q, k, v = (F.linear(x, w, b)[:total] for w, b in qkv)
            if n == 1:
                ctx = self._attend(q, k, v)
            else:
                ctx = torch.cat([self._attend(*seg) for seg in zip(q.split(counts), k.split(counts), v.split(counts))])
            if extra > 0:
                ctx = torch.cat([ctx, ctx.new_zeros((extra, hidden))])
            x = F.layer_norm(x + F.linear(ctx, *out), (hidden,), *norm1, eps)
            x = F.layer_norm(x + F.linear(F.gelu(F.linear(x, *inter)), *down), (hidden,), *norm2, eps)
        sizes = torch.tensor(counts, dtype=torch.float32)[:, None].clamp_min(1)
        seen(batch_ids, x[:total], counts)  # the last layer's token vectors, where a caller collects them (.late)
        return self.pool(x[:total], counts, sizes)
