"""ParametricMemory: LoRA adapters per user and team (the cube's ``para_mem`` slot).

Where it sits: a cube owns one ``ParametricMemory`` (``cube.para_mem``, made by
:meth:`ParametricMemory.for_cube`) whose adapters live in ``<cube>/adapters/<name>/`` (see
:mod:`.manifest`). The local runtime binds its model to it (:meth:`bind`) and calls :meth:`route`
before every turn to activate the user's adapter. :meth:`distill` writes new adapters from the
cube's plaintext memories; :meth:`merge` combines adapters into a team adapter.

Routing: a user runs with the adapter assigned to them (``assign``, kept in ``routes.json``), else
their own distilled adapter, else the bare base model. With a router (:meth:`use_router`, an
:class:`~.routing.AdapterRouter`), a request whose text is not about what that adapter holds runs
on the bare base model too.

Sync; the registry's lock serialises every change to the shared PEFT model.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import CubeCorruptedError, InvalidInputError, ModelMismatchError, require
from .distill import DistillConfig, mean_loss, train_lora
from .manifest import AdapterManifest, check_name, read_manifest, user_adapter_name, write_adapter
from .registry import TRAINING, AdapterRegistry, AdapterRoute

log = logging.getLogger(__name__)
ROUTES = "routes.json"


class ParametricMemory:
    """Per-user LoRA adapters on one shared base model.

    Example (tiny random model)::

        para = ParametricMemory("/tmp/cube/adapters")
        para.bind(tiny_causal_lm(), byte_tokenizer())
        manifest = para.distill("alice", texts=["Alice's cat is called Miso."])
        para.route("alice")          # AdapterRoute(name='user-alice-…', digest='…')
    """

    def __init__(self, directory: str | Path | None = None, *, max_resident: int = 8,
                 cube: Any = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_resident = max_resident
        self.cube = cube
        self.registry: AdapterRegistry | None = None
        self.tokenizer: Any = None
        self.refused: dict[str, str] = {}  # folder name -> why it was not registered
        self.router: Any = None  # AdapterRouter: None applies the user's adapter to every request
        self._lock = threading.RLock()

    @classmethod
    def for_cube(cls, cube: Any, *, max_resident: int | None = None) -> ParametricMemory:
        """The parametric memory of a cube: adapters under ``cube.path / "adapters"``."""
        cfg = getattr(cube, "config", None)
        limit = max_resident or getattr(cfg, "max_resident_adapters", None) or 8
        from ..cube import own_folder

        return cls(own_folder(cube.path, "adapters"), max_resident=limit, cube=cube)

    # -- binding ---------------------------------------------------------------------------------
    def bind(self, model: Any, tokenizer: Any) -> None:
        """Attach the shared base model; registers every adapter folder made for it.

        Folders made for another base model, or damaged, are skipped and listed in :attr:`refused`.
        """
        require("peft", "local")
        with self._lock:
            if self.registry is not None and self.registry.base_model is model:
                self.tokenizer = tokenizer
                return
            self.registry = AdapterRegistry(model, max_resident=self.max_resident)
            self.tokenizer = tokenizer
            self.refused = {}
            if self.directory is None or not self.directory.exists():
                return
            for folder in sorted(p for p in self.directory.iterdir() if p.is_dir()):
                try:
                    _check_own_folder(self.directory, folder)
                    named = read_manifest(folder).name
                    if named != folder.name:  # delete() removes the folder a name maps to
                        raise CubeCorruptedError(
                            f"adapter folder {folder.name!r} holds a manifest named {named!r}; rename one to match")
                    self.registry.register(folder)
                except (ModelMismatchError, CubeCorruptedError, InvalidInputError) as exc:
                    self.refused[folder.name] = str(exc)
                    log.warning("adapter folder %s not registered: %s", folder, exc)

    def _reg(self) -> AdapterRegistry:
        if self.registry is None:
            raise InvalidInputError(
                "parametric memory has no model yet; call para_mem.bind(model, tokenizer) or build a "
                "LocalRuntime with this cube")
        return self.registry

    @property
    def model(self) -> Any:
        """The model to run forward passes on (PEFT wrapper once adapters are loaded)."""
        return self._reg().model

    def adapters(self) -> list[str]:
        """Registered adapter names."""
        return self._reg().registered()

    def manifest(self, name: str) -> AdapterManifest:
        return self._reg().manifest(name)

    # -- routing ---------------------------------------------------------------------------------
    def _routes(self, *, strict: bool = False) -> dict[str, str]:
        """``routes.json`` as {user id: adapter name}.

        A damaged file (not JSON, not an object) is :class:`CubeCorruptedError` when ``strict``
        (writing must not silently drop other users' assignments); routing reads it as empty with a
        warning, so users run on their own adapter or the base model, never on someone else's.
        Rows whose values are not adapter names are left out.
        """
        path = self.directory / ROUTES if self.directory is not None else None
        if path is None or not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected an object of user id -> adapter name, got {type(data).__name__}")
        except (ValueError, OSError, RecursionError) as exc:
            error = CubeCorruptedError(f"{path} is damaged ({str(exc)[:200]}); fix it or delete it to clear "
                                       "every assignment")
            if strict:
                raise error from exc
            log.warning("%s; routing as if no user had an assignment", error)
            return {}
        routes: dict[str, str] = {}
        for user, name in data.items():
            try:
                routes[user] = check_name(name)
            except InvalidInputError:
                log.warning("%s: route for %r ignored: %r is not an adapter name", path, user[:80], name)
        return routes

    def assign(self, user_id: str, adapter: str | None) -> None:
        """Route ``user_id`` to ``adapter`` (e.g. a team adapter); ``None`` removes the assignment."""
        routes = self._routes(strict=True)
        if adapter is None:
            routes.pop(user_id, None)
        else:
            self._reg().manifest(adapter)  # must exist
            routes[user_id] = adapter
        if self.directory is None:
            raise InvalidInputError("assignments need a directory (a cube) to be kept in")
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / (ROUTES + ".tmp")
        tmp.write_text(json.dumps(routes, indent=1))
        os.replace(tmp, self.directory / ROUTES)

    def use_router(self, router: Any) -> None:
        """Route by relevance (an :class:`~.routing.AdapterRouter`), or ``None`` for every request."""
        if router is not None and not callable(getattr(router, "applies", None)):
            raise InvalidInputError("use_router needs an AdapterRouter (or None to apply adapters to every request)")
        self.router = router

    def adapter_for(self, user_id: str | None, query: str | None = None) -> str | None:
        """The adapter name a request by ``user_id`` runs with, or ``None`` for the base model.

        With a router and the request's text (``query``), the user's adapter is left out when the
        request is not about what it holds.
        """
        if user_id is None or self.registry is None:
            return None
        name = self._routes().get(user_id) or user_adapter_name(user_id)
        if name not in self.registry.registered():
            return None
        if self.router is not None and query is not None and not self.router.applies(self.registry.manifest(name), query, user_id):
            return None
        return name

    def route(self, user_id: str | None, query: str | None = None) -> AdapterRoute | None:
        """Activate ``user_id``'s adapter for a request (its text: ``query``); ``None`` when the
        request runs on the base model."""
        name = self.adapter_for(user_id, query)
        return self._reg().activate(name) if name is not None else None

    def activate(self, name: str) -> AdapterRoute:
        return self._reg().activate(name)

    def unload(self, name: str) -> None:
        self._reg().unload(name)

    # -- writing adapters ------------------------------------------------------------------------
    def _folder(self, name: str) -> Path:
        if self.directory is None:
            raise InvalidInputError("this ParametricMemory has no directory to write adapters to")
        return self.directory / check_name(name)

    def _save(self, name: str, state: dict[str, Any], peft_config: Any, manifest: AdapterManifest) -> AdapterManifest:
        reg = self._reg()
        folder = self._folder(name)
        write_adapter(folder, state, peft_config, manifest)
        if name in reg.resident:
            return reg.hot_swap(name, folder)
        return reg.register(folder)

    def distill(self, user_id: str, *, texts: Sequence[str] | None = None, memories: Sequence[Any] | None = None,
                config: DistillConfig | None = None, name: str | None = None,
                progress: bool = True, qa: Sequence[tuple[str, str]] = (),
                on_epoch: Any = None) -> AdapterManifest:
        """Train a LoRA adapter on a user's memories and save it with its provenance.

        Args:
            user_id: whose memories (and whose adapter name, unless ``name`` is given).
            texts: the memory texts, when ``memories`` is not given.
            memories: ``MemoryItem``-like objects (``.id``, ``.version``, ``.text``); default: every
                memory of the user in the cube.
            config: training settings (:class:`DistillConfig`; ``PRESET_RECALL`` for recall).
            name: the adapter's name.
            progress: show a progress bar.
            qa: question/answer views of the memories (written by an LLM reader, or by hand), used
                by ``config.views`` containing ``"qa"`` and by early stopping (``config.holdout``).
            on_epoch: ``on_epoch(epoch, held_out_loss)`` after each epoch, with ``para_mem.model``
                running the adapter being trained (benchmarks measure along one run with it).

        Returns:
            The saved adapter's manifest. Re-distilling replaces the user's adapter (hot-swapped in
            place when it is loaded).
        """
        reg = self._reg()
        config = config or DistillConfig()
        name = check_name(name or user_adapter_name(user_id))
        if memories is None and texts is None:
            if self.cube is None:
                raise InvalidInputError("pass texts= or memories=, or use a cube's para_mem")
            memories = self.cube.get_all(user_id=user_id, limit=None)
        provenance = [{"id": getattr(m, "id", None), "version": getattr(m, "version", None)}
                      for m in (memories or [])]
        corpus = [m.text for m in memories] if memories is not None else list(texts or [])
        with reg.training_adapter(config.lora_config(), seed=config.seed) as peft_model:
            curve = train_lora(peft_model, self.tokenizer, corpus, config, progress=progress,
                               desc=f"distill {name}", qa=list(qa), on_epoch=on_epoch)
            state, peft_config = reg.extract(TRAINING)
            state = {k: v.detach().clone() for k, v in state.items()}
        import peft

        manifest = AdapterManifest(
            name=name, base_fingerprint=reg.fingerprint, base_dtype=reg.dtype, user_id=user_id,
            kind="distilled", memories=provenance,
            training={**config.model_dump(), "texts": len(corpus), "peft": peft.__version__},
            loss_curve=curve, route_texts=[t for t in corpus if t and t.strip()])
        manifest = self._save(name, state, peft_config, manifest)
        self._audit("adapter.distill", user_id, name, {"memories": len(corpus), "final_loss": curve[-1]})
        return manifest

    def merge(self, names: Sequence[str], weights: Sequence[float], new_name: str, *,
              combination_type: str = "cat") -> AdapterManifest:
        """Combine adapters into a new one with PEFT's ``add_weighted_adapter`` (for a team cube).

        ``"cat"`` (default) is exact: the new delta is the weighted sum of the source deltas, at the
        sum of their ranks. ``"linear"`` needs equal ranks; ``"svd"`` compresses to one rank.
        """
        reg = self._reg()
        if len(names) < 1 or len(names) != len(weights):
            raise InvalidInputError("merge needs one weight per adapter and at least one adapter")
        if len(set(names)) > reg.max_resident:
            raise InvalidInputError(f"merge can combine at most max_resident={reg.max_resident} adapters")
        new_name = check_name(new_name)
        for n in names:
            reg.load(n)
        model = reg.model
        with reg._lock:
            model.add_weighted_adapter(list(names), [float(w) for w in weights], TRAINING,
                                       combination_type=combination_type)
            try:
                state, peft_config = reg.extract(TRAINING)
                state = {k: v.detach().clone() for k, v in state.items()}
            finally:
                reg.delete_from_model(TRAINING)
        manifest = AdapterManifest(
            name=new_name, base_fingerprint=reg.fingerprint, base_dtype=reg.dtype, kind="merged",
            sources=[{"adapter": n, "weight": float(w), "weights_sha256": reg.manifest(n).weights_sha256,
                      "memories": reg.manifest(n).memories} for n, w in zip(names, weights, strict=True)],
            training={"combination_type": combination_type},
            route_texts=[t for n in names for t in reg.manifest(n).route_texts])
        manifest = self._save(new_name, state, peft_config, manifest)
        self._audit("adapter.merge", None, new_name, {"sources": list(names), "weights": list(weights)})
        return manifest

    # -- measuring and batches -------------------------------------------------------------------
    def loss(self, texts: Sequence[str], *, adapter: str | None = None) -> float:
        """Mean next-token loss on ``texts`` with ``adapter`` (``None``: the bare base model)."""
        reg = self._reg()
        if adapter is not None:
            reg.activate(adapter)
            return mean_loss(reg.model, self.tokenizer, texts)
        model = reg.model
        if reg._peft is not None and model.peft_config:
            with model.disable_adapter():
                return mean_loss(model, self.tokenizer, texts)
        return mean_loss(model, self.tokenizer, texts)

    def forward_batch(self, input_ids: Any, attention_mask: Any, user_ids: Sequence[str | None]) -> Any:
        """Logits of one batch whose rows belong to different users (each with their adapter)."""
        return self._reg().forward_batch(input_ids, attention_mask,
                                         [self.adapter_for(u) for u in user_ids])

    def delete(self, name: str) -> None:
        """Unload and delete an adapter folder."""
        import shutil

        reg = self._reg()
        reg.manifest(name)
        reg.unload(name)
        reg._known.pop(name, None)
        shutil.rmtree(self._folder(name), ignore_errors=True)

    def _audit(self, action: str, principal: str | None, target: str, detail: dict[str, Any]) -> None:
        audit = getattr(self.cube, "audit", None)
        if audit is None:
            return
        try:
            audit(action, principal, target, detail, True)
        except Exception:  # pragma: no cover - auditing must never break training
            log.exception("audit hook failed")


def _check_own_folder(directory: Path, folder: Path) -> None:
    """An adapter folder found in a cube must be a real folder inside it (not a link elsewhere)."""
    if folder.is_symlink() or folder.resolve().parent != directory.resolve():
        raise CubeCorruptedError(
            f"adapter folder {folder.name!r} is a link to {folder.resolve()}, outside {directory}; "
            "copy the adapter into the cube instead")


__all__ = ["ParametricMemory", "DistillConfig"]
