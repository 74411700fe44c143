"""An exact, faster stand-in for ``torch._int_mm`` inside reference computations of the int8 query tests.

Why: on this AVX2-only CPU oneDNN's int8 product is a reference kernel, ~60x slower than an fp32 product
(~13 ms of CPU per token per MiniLM pass), and the int8 tests' reference rows spent tens of seconds in it.

Why it changes no number: every term of an int8 x int8 product and every partial sum of a row is an
integer of magnitude at most 127 * 127 * 1536 < 2**25 (1536: MiniLM's widest input), which float64
(53-bit mantissa) holds exactly in any summation order; so ``(a.double() @ b.double()).to(int32)`` is
the int32 matrix ``torch._int_mm`` returns, and every float op of the int8 pass around it runs on the
same values. :func:`exact_int_mm` also checks that on the extreme sums each time it is entered. Use it
only where the real kernel's result is compared against elsewhere in the same module (each user says
where), so the suite keeps running the real kernel on the same texts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def exact_int_mm(model: Any) -> Iterator[None]:
    """Within the block, ``model``'s int8 layers (a ``TorchBert``: its ``Int8Linears`` and its lean int8
    encoder, built or not yet) multiply in float64; the real product is put back afterwards."""
    import torch

    int8 = model.int8_linears()
    real = int8.matmul
    doubled: dict[int, tuple[Any, Any]] = {}  # weight -> (weight, as float64), made once per weight

    def product(a: Any, b: Any) -> Any:
        key = b.data_ptr()
        if key not in doubled:
            doubled[key] = (b, b.double())
        return (a.double() @ doubled[key][1]).to(torch.int32)

    extremes = torch.tensor([[127] * 1536, [-127] * 1536, [127, -127] * 768, [1] * 1536], dtype=torch.int8)
    weights = torch.tensor([[127, -127, 1, 0]] * 1536, dtype=torch.int8)
    assert torch.equal(product(extremes, weights), real(extremes, weights))
    lean = model._fast  # the lean encoder, once built, holds its own reference to the product
    int8.matmul = product
    if lean is not None:
        lean.matmul = product
    try:
        yield
    finally:
        int8.matmul = real
        for encoder in {id(e): e for e in (lean, model._fast) if e is not None}.values():
            encoder.matmul = real
