"""What MiniLM's two packed forward passes share: the embedding weights, the packed token embedding
and the mean pooling (:mod:`.int8_fast` for int8 queries, :mod:`.fp32_exact` for fp32 texts).

"Packed": every text's tokens one after another in one (tokens, hidden) matrix, no padding anywhere,
so each row's arithmetic is its own (the reference ``TorchBert._forward`` pads to a (texts, length) grid).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class PackedEncoder:
    """The embedding layer and pooling of a packed MiniLM pass; subclasses run the encoder layers.

    Args:
        torch: the torch module.
        tw: the model's weights as torch tensors (``TorchBert.tw``).
        heads, eps: the encoder's attention heads and layer-norm epsilon (``TorchBert.heads``, ``.eps``).
    """

    def __init__(self, torch: Any, tw: dict[str, Any], heads: int, eps: float) -> None:
        self.torch = torch
        self.F = torch.nn.functional
        self.heads = heads
        self.eps = eps
        self.word = tw["embeddings.word_embeddings.weight"]
        self.position = tw["embeddings.position_embeddings.weight"]
        self.token_type = tw["embeddings.token_type_embeddings.weight"][0]
        self.hidden = int(self.word.shape[1])
        self.head_dim = self.hidden // heads
        self.embed_norm = (tw["embeddings.LayerNorm.weight"], tw["embeddings.LayerNorm.bias"])

    def embed(self, batch_ids: list[list[int]]) -> tuple[Any, list[int]]:
        """The packed (tokens, hidden) input of the first layer, and each text's token count."""
        torch = self.torch
        counts = [len(seq) for seq in batch_ids]
        ids = torch.tensor([t for seq in batch_ids for t in seq], dtype=torch.long)
        positions = torch.tensor([j for c in counts for j in range(c)], dtype=torch.long)
        # the reference adds (word + position) + token type on the padded grid: the same sums, packed
        x = self.word[ids] + self.position[positions] + self.token_type
        return self.F.layer_norm(x, (self.hidden,), *self.embed_norm, self.eps), counts  # row by row

    def pool(self, x: Any, counts: list[int], divisor: Any) -> np.ndarray:
        """Each text's mean token (its rows of ``x`` summed, over ``divisor``: its count as the reference's
        dtype), as a unit float32 vector."""
        torch = self.torch
        rows = torch.tensor([i for i, c in enumerate(counts) for _ in range(c)], dtype=torch.long)
        pooled = torch.zeros((len(counts), self.hidden)).index_add_(0, rows, x) / divisor
        return self.F.normalize(pooled, dim=1).numpy().astype(np.float32)  # type: ignore[no-any-return]
