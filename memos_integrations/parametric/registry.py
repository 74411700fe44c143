"""AdapterRegistry: many LoRA adapters on one shared base model, with a residency limit.

Part of parametric memory (``parametric/``). The registry knows every adapter folder (registered),
keeps at most ``max_resident`` of them loaded in the PEFT model (least recently used is unloaded
first), activates one per request, hot-swaps new weights into a loaded adapter in place, and runs
mixed batches where each row uses its own adapter (PEFT's ``adapter_names``).

The base model is wrapped into a ``PeftModel`` by the first load. PEFT injects LoRA layers into the
base model *in place*, so after that, forward passes must go through :attr:`model` (the wrapper),
with ``disable_adapter()`` for requests that want the bare base model.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, ItemNotFoundError
from ..models.fingerprint import model_dtype, model_fingerprint
from .manifest import AdapterManifest, check_name, verify_adapter

BASE = "__base__"  # the row name PEFT uses for "no adapter" in a mixed batch
TRAINING = "_distill_"  # the temporary adapter distillation trains


@dataclass(frozen=True)
class AdapterRoute:
    """The adapter a request runs with: its name and the digest that keys KV caches made with it."""

    name: str
    digest: str


class AdapterRegistry:
    """Registered adapters (folders) and the resident subset (loaded into the PEFT model)."""

    def __init__(self, base_model: Any, *, max_resident: int = 8) -> None:
        if max_resident < 1:
            raise InvalidInputError(f"max_resident must be at least 1, got {max_resident}")
        self.base_model = base_model
        self.max_resident = max_resident
        self.fingerprint = model_fingerprint(base_model)
        self.dtype = model_dtype(base_model)
        self._peft: Any = None
        self._known: dict[str, tuple[Path, AdapterManifest]] = {}
        self._resident: OrderedDict[str, None] = OrderedDict()
        self._active: str | None = None
        self._lock = threading.RLock()
        self.loads = 0
        self.evictions = 0

    # -- state -----------------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The model to run: the PEFT wrapper once any adapter was loaded, else the base model."""
        # A wrapper with no adapter left cannot run forward; the injected layers are inert then.
        return self._peft if self._peft is not None and self._peft.peft_config else self.base_model

    @property
    def resident(self) -> list[str]:
        """Loaded adapter names, least recently used first."""
        with self._lock:
            return list(self._resident)

    @property
    def active(self) -> str | None:
        return self._active

    def registered(self) -> list[str]:
        return sorted(self._known)

    def manifest(self, name: str) -> AdapterManifest:
        return self._entry(name)[1]

    def _entry(self, name: str) -> tuple[Path, AdapterManifest]:
        try:
            return self._known[name]
        except KeyError:
            raise ItemNotFoundError(
                f"adapter {name!r} is not registered; distill it or register its folder first") from None

    # -- registration and residency --------------------------------------------------------------
    def register(self, folder: str | Path) -> AdapterManifest:
        """Record an adapter folder after verifying it (base model, checksum, no pickles)."""
        path = Path(folder)
        manifest = verify_adapter(path, base_fingerprint=self.fingerprint, base_dtype=self.dtype)
        check_name(manifest.name)
        with self._lock:
            stale = manifest.name in self._resident and self._known[manifest.name][1] != manifest
            self._known[manifest.name] = (path, manifest)
            if stale:  # new weights under a loaded name: swap them in
                self._swap_in(manifest.name, path)
        return manifest

    def load(self, name: str) -> None:
        """Make ``name`` resident (evicting the least recently used beyond the limit)."""
        with self._lock:
            if name in self._resident:
                self._resident.move_to_end(name)
                return
            path, _ = self._entry(name)
            while len(self._resident) >= self.max_resident:
                self._evict(next(iter(self._resident)))
            if self._peft is None:
                from peft import PeftModel

                self._peft = PeftModel.from_pretrained(self.base_model, str(path), adapter_name=name,
                                                       is_trainable=False)
                self._peft.eval()
            else:
                self._peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
                self._fix_active()  # the wrapper may still point at a deleted adapter
            self._resident[name] = None
            self.loads += 1

    def _evict(self, name: str) -> None:
        self.delete_from_model(name)
        del self._resident[name]
        self.evictions += 1

    def delete_from_model(self, name: str) -> None:
        """Delete an adapter from the PEFT model and leave a valid active adapter behind.

        PEFT keeps pointing at a deleted adapter when it was active, and its forward then fails;
        pointing at any loaded one is harmless because routing always sets the adapter it needs.
        """
        self._peft.delete_adapter(name)
        if self._active == name:
            self._active = None
        self._fix_active()

    def _fix_active(self) -> None:
        remaining = list(self._peft.peft_config)
        if remaining and self._peft.active_adapter not in remaining:
            self._peft.set_adapter(remaining[-1], inference_mode=True)
            self._active = remaining[-1]

    def unload(self, name: str) -> None:
        """Remove ``name`` from the model (it stays registered and reloads on demand)."""
        with self._lock:
            if name in self._resident:
                self._evict(name)

    def activate(self, name: str) -> AdapterRoute:
        """Load if needed and make ``name`` the adapter of the next forward passes."""
        with self._lock:
            self.load(name)
            if self._active != name:
                # inference_mode keeps the adapter frozen (set_adapter would make it trainable).
                self._peft.set_adapter(name, inference_mode=True)
                self._active = name
            return AdapterRoute(name, self._known[name][1].weights_sha256[:16])

    def _swap_in(self, name: str, path: Path) -> None:
        """Replace a loaded adapter's weights in place (same targets and rank): no graph change."""
        from peft.utils.hotswap import hotswap_adapter

        try:
            hotswap_adapter(self._peft, str(path), adapter_name=name)
        except (ValueError, RuntimeError):
            # Incompatible shapes or targets: fall back to unload + load under the same name.
            self._evict(name)
            self.load(name)
            self._active = None

    def hot_swap(self, name: str, folder: str | Path) -> AdapterManifest:
        """Point ``name`` at new weights; swapped in place when resident. Returns the new manifest."""
        path = Path(folder)
        manifest = verify_adapter(path, base_fingerprint=self.fingerprint, base_dtype=self.dtype)
        with self._lock:
            self._known[name] = (path, manifest)
            if name in self._resident:
                self._swap_in(name, path)
        return manifest

    @contextmanager
    def training_adapter(self, lora_config: Any, *, seed: int = 0) -> Iterator[Any]:
        """A fresh trainable adapter on the shared base for the duration of the block.

        Yields the PEFT model with only that adapter trainable and active; afterwards the adapter
        is removed and the previously active adapter restored. Extract its weights inside the block.
        """
        import torch

        with self._lock:
            previous = self._active
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                if self._peft is None:
                    from peft import get_peft_model

                    self._peft = get_peft_model(self.base_model, lora_config, adapter_name=TRAINING)
                else:
                    self._peft.add_adapter(TRAINING, lora_config)
            self._peft.set_adapter(TRAINING)  # trainable on purpose
            try:
                yield self._peft
            finally:
                self.delete_from_model(TRAINING)
                self._peft.eval()
                self._active = None
                if previous is not None and previous in self._resident:
                    self.activate(previous)

    def extract(self, adapter_name: str) -> tuple[dict[str, Any], Any]:
        """``(state_dict, peft_config)`` of a loaded adapter, in PEFT's saved-file layout."""
        from peft import get_peft_model_state_dict

        with self._lock:
            state = get_peft_model_state_dict(self._peft, adapter_name=adapter_name)
            return state, self._peft.peft_config[adapter_name]

    # -- batches ---------------------------------------------------------------------------------
    def forward_batch(self, input_ids: Any, attention_mask: Any, adapters: list[str | None]) -> Any:
        """Logits for a batch whose rows use different adapters (``None`` = base model)."""
        import torch

        wanted = [a for a in dict.fromkeys(adapters) if a is not None]
        if len(wanted) > self.max_resident:
            raise InvalidInputError(
                f"a batch may mix at most max_resident={self.max_resident} adapters, got {len(wanted)}")
        if len(adapters) != int(input_ids.shape[0]):
            raise InvalidInputError("adapters needs one entry per batch row")
        with self._lock:
            for name in wanted:
                self.load(name)
            if self._peft is None or not self._peft.peft_config:
                with torch.no_grad():
                    return self.base_model(input_ids=input_ids, attention_mask=attention_mask).logits
            names = [a if a is not None else BASE for a in adapters]
            with torch.no_grad():
                return self._peft(input_ids=input_ids, attention_mask=attention_mask,
                                  adapter_names=names).logits
