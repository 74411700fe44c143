"""The local-model runtime: a transformers causal LM served with the cube's three memories.

Importing this package does not import torch; :class:`LocalRuntime` imports it when built, and
raises :class:`~memos_integrations.errors.MissingExtraError` naming
``pip install 'memos-integrations[local]'`` when it is missing.
"""

from __future__ import annotations

from . import smollm2
from .runtime import Generation, LocalRuntime, StreamEvent

__all__ = ["Generation", "LocalRuntime", "StreamEvent", "smollm2"]
