"""Parametric memory: LoRA adapters per user and team on a shared base model (the cube's ``para_mem``).

Importing this package does not import torch or PEFT; they are imported when a model is bound.
See :mod:`.memory` for routing (:mod:`.routing` for routing by relevance), :mod:`.registry` for residency and batches, :mod:`.manifest` for the
on-disk format and ``docs/local-models.md`` for the life cycle.
"""

from __future__ import annotations

from .distill import PRESET_DEFAULT, PRESET_QUICK, PRESET_RECALL, DistillConfig
from .manifest import AdapterManifest, user_adapter_name
from .memory import ParametricMemory
from .registry import AdapterRegistry, AdapterRoute
from .routing import AdapterRouter

__all__ = ["PRESET_DEFAULT", "PRESET_QUICK", "PRESET_RECALL", "AdapterManifest", "AdapterRegistry", "AdapterRoute", "AdapterRouter",
           "DistillConfig", "ParametricMemory", "user_adapter_name"]
