"""Activation memory: per-thread KV caches for local transformers models (the cube's ``act_mem``).

Importing this package does not import torch; the tensor work happens when a model is passed in.
See :mod:`.memory` for the contract and ``docs/local-models.md`` for the life cycle.
"""

from __future__ import annotations

from .memory import ActivationMemory, ActivationStats, CacheLease, common_prefix

__all__ = ["ActivationMemory", "ActivationStats", "CacheLease", "common_prefix"]
