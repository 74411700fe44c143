"""The int8 query encoder's lean forward pass: the same vectors as ``TorchBert._forward(ids, int8)``, less glue.

Why: a search's query is embedded in int8 (``MiniLMEmbedder(query_precision="int8")``) one to a few
texts at a time, where the encoder's arithmetic is small (a 13-token query: ~0.8 ms of int8 products)
and the Python and dispatch around ~550 torch ops per pass was most of its ~4.6 ms of CPU (issue 13).

What changes, and why no vector does: every floating-point operation of the reference pass runs here
on the same values, in the same order, with the same kernels; only work that computes no number of the
result goes: the padded (texts, length) id and mask tensors, the attention mask and padding scatter
the int8 path never reads, boolean-mask gathers (the tokens are packed from the start), a ``cat`` of
one text's attention, per-call temporaries (in-place ops on tensors this pass owns), the int32 product's
``.float()`` copy (``addcmul`` casts it the same way), and ``aminmax`` (slow here; ``amin`` and ``amax``
are as exact). The int8 layers are :class:`~memos_integrations.textual.minilm.Int8Linears`' own
weights, read once into a tuple per layer instead of a dict look-up per product.

Measured (benchmarks/bench_query_embed.py): 20-37% less CPU per query at batches of 1-8, 9-26% fewer
torch ops; every one of the 762 LoCoMo dev questions bit for bit the reference, alone, in batches and
at 2 torch threads (``tests/unit/test_query_fastpath.py`` checks hostile texts the same way). Tried
and dropped: ``torch.jit.script`` of the layers (fusers off, so the same bits) measured no faster, and
oneDNN's prepacked ``qlinear_pointwise`` (exact too) slower than ``torch._int_mm`` at these sizes.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from .packed import PackedEncoder


class Int8QueryEncoder(PackedEncoder):
    """``TorchBert._forward(batch_ids, int8)`` for a prepared :class:`Int8Linears`, bit for bit.

    Args:
        torch: the torch module.
        tw: the model's weights as torch tensors (``TorchBert.tw``).
        int8: the prepared int8 layers (``TorchBert.int8_linears()``).
        layers, heads, eps: the encoder's shape (``TorchBert.layers``, ``.heads``, ``.eps``).
    """

    def __init__(self, torch: Any, tw: dict[str, Any], int8: Any, layers: int, heads: int, eps: float) -> None:
        super().__init__(torch, tw, heads, eps)
        self.int8 = int8
        self.matmul = int8.matmul
        self.layers = []
        for i in range(layers):
            p = f"encoder.layer.{i}."
            self.layers.append((
                int8.layers[p + "attention.self.qkv"], int8.layers[p + "attention.output.dense"],
                (tw[p + "attention.output.LayerNorm.weight"], tw[p + "attention.output.LayerNorm.bias"]),
                int8.layers[p + "intermediate.dense"], int8.layers[p + "output.dense"],
                (tw[p + "output.LayerNorm.weight"], tw[p + "output.LayerNorm.bias"]),
            ))

    def _linear(self, x: Any, layer: tuple[Any, Any, Any, Any]) -> Any:
        """``Int8Linears.__call__``'s arithmetic op for op (see there); in place only on its own temporaries."""
        torch = self.torch
        weight, scale, bias, weight_sum = layer
        # amax and amin are exact, as aminmax is, and 3-10x faster than its (T, N) kernel here
        low, high = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
        mid = (high + low).mul_(0.5)
        half = (high - low).mul_(0.5).clamp_min_(1e-12)
        # ``127.0 / half`` is ``half.reciprocal() * 127.0`` in torch (Tensor.__rtruediv__): the same two roundings
        quantised = (x - mid).mul_(half.reciprocal().mul_(127.0)).round_().to(torch.int8)
        # the int32 product goes in as it is: addcmul casts it to float32 as ``.float()`` would, without a copy
        return torch.addcmul(bias, self.matmul(quantised, weight), half * scale).addcmul_(mid, weight_sum)

    def _attend(self, qkv: Any) -> Any:
        """``TorchBert._attend``: one text's self-attention, (tokens, 3 * hidden) -> (tokens, hidden)."""
        # the views the reference's split / reshape / transpose make (same strides), in three ops instead of nine
        q, k, v = qkv.view(1, -1, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, self.hidden)

    def __call__(self, batch_ids: list[list[int]]) -> np.ndarray:
        """One unit vector per text of token ids (call under ``torch.inference_mode()``)."""
        torch, F, hidden, eps = self.torch, self.F, self.hidden, self.eps
        n = len(batch_ids)
        x, counts = self.embed(batch_ids)  # padding rows never touched a real one in the reference either
        linear, attend = self._linear, self._attend
        for qkv_layer, out_layer, norm1, inter_layer, down_layer, norm2 in self.layers:
            qkv = linear(x, qkv_layer)
            ctx = attend(qkv) if n == 1 else torch.cat([attend(seg) for seg in qkv.split(counts)])
            x = F.layer_norm(x + linear(ctx, out_layer), (hidden,), *norm1, eps)
            x = F.layer_norm(x + linear(F.gelu(linear(x, inter_layer)), down_layer), (hidden,), *norm2, eps)
        sizes = torch.tensor(counts, dtype=torch.long)[:, None].clamp_min(1)  # the reference's int64 divisor
        return self.pool(x, counts, sizes)


#: :func:`int8_thread` runs int8 query passes on one torch thread (False: the configured count, as before)
ONE_THREAD = True


@contextlib.contextmanager
def int8_thread(embedder: Any) -> Iterator[None]:
    """Run ``embedder``'s int8 query pass on one torch thread, then restore the count.

    For the embedding process only (textual/embed_process.py), where requests run one at a time: torch's
    thread count is process-wide, and a thread embedding documents meanwhile would get another count.
    Why: a query's products are small, and with two threads each one wakes an OpenMP worker that spins
    after it: ``memcube serve`` without ``OMP_NUM_THREADS`` gives the child 2 threads on a 2-core machine,
    and there (load average ~10) a child spent 138 ms of CPU per query at batch 1 and 25 ms at batch 8,
    against 4.7 and 1.5 ms on one thread (bench_query_embed.py --child-threads 2). Safe for the bits: the int8 pass's integer products are exact and its float ops
    are row- or text-wise, so its rows do not depend on the thread count (bench_query_embed.py --threads
    checks the 762 dev questions). fp32 passes keep the configured count: their sums may depend on it.
    """
    torch: Any = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else 1
    if not ONE_THREAD or threads == 1 or embedder.query_precision_in_use != "int8":
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
