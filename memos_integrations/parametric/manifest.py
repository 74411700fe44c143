"""The on-disk format of one adapter in ``<cube>/adapters/<name>/`` and its provenance manifest.

Part of parametric memory (``parametric/``). An adapter folder holds exactly what PEFT's
``load_adapter`` reads (``adapter_config.json`` + ``adapter_model.safetensors``) plus
``manifest.json``: the base model fingerprint and dtype it was trained on, the memory ids and
versions it was distilled from (or the adapters it was merged from), the training config, the loss
curve and a SHA-256 of the weights file. Loading checks the manifest before PEFT touches the files,
and refuses pickled weights (``adapter_model.bin``) outright.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CubeCorruptedError, InvalidInputError, ModelMismatchError

FORMAT_VERSION = 1
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
MANIFEST = "manifest.json"
# PEFT uses names as module keys: no dots; and a name inside "lora_" confuses its key matching.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


@dataclass
class AdapterManifest:
    """Provenance of one adapter."""

    name: str
    base_fingerprint: str
    base_dtype: str
    weights_sha256: str = ""
    user_id: str | None = None
    kind: str = "distilled"  # distilled | merged | imported
    memories: list[dict[str, Any]] = field(default_factory=list)  # [{"id", "version"}]
    sources: list[dict[str, Any]] = field(default_factory=list)  # merged-from adapters and weights
    training: dict[str, Any] = field(default_factory=dict)
    loss_curve: list[float] = field(default_factory=list)
    #: the texts it was distilled from (merged: its sources'); AdapterRouter compares requests with them
    route_texts: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    format: int = FORMAT_VERSION


def check_name(name: str) -> str:
    """Adapter names become folder names and PEFT module keys: keep them plain."""
    if not isinstance(name, str) or not _NAME.match(name) or name in "lora_" or name == "__base__":
        raise InvalidInputError(
            f"adapter name {name!r} must be 1-100 characters of letters, digits, '_' or '-' "
            "(and not a part of 'lora_')")
    return name


def user_adapter_name(user_id: str) -> str:
    """The adapter name ``distill`` uses for a user (a hash keeps any user id a valid name)."""
    if not isinstance(user_id, str) or not user_id:
        raise InvalidInputError(f"user_id must be a non-empty string, got {user_id!r}")
    slug = re.sub(r"[^A-Za-z0-9_-]", "_", user_id)[:40]
    return f"user-{slug}-{hashlib.sha256(user_id.encode()).hexdigest()[:8]}"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_adapter(folder: Path, state: dict[str, Any], peft_config: Any, manifest: AdapterManifest) -> None:
    """Write weights (safetensors), PEFT config and manifest; the manifest goes last, so a folder
    without a manifest is an interrupted write and is never loaded."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    tmp = folder / (WEIGHTS + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, folder / WEIGHTS)
    peft_config.save_pretrained(str(folder))
    manifest.weights_sha256 = sha256_file(folder / WEIGHTS)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(asdict(manifest), indent=1))
    os.replace(tmp, folder / MANIFEST)


def read_manifest(folder: Path) -> AdapterManifest:
    """Parse ``manifest.json``; :class:`CubeCorruptedError` when missing or malformed."""
    path = folder / MANIFEST
    try:
        raw = json.loads(path.read_text())
        return AdapterManifest(**raw)
    except FileNotFoundError as exc:
        raise CubeCorruptedError(
            f"adapter folder {folder} has no manifest.json (an interrupted write?); re-run distill "
            "or delete the folder") from exc
    except (ValueError, TypeError) as exc:
        raise CubeCorruptedError(f"adapter manifest {path} is unreadable: {exc}") from exc


def verify_adapter(folder: Path, *, base_fingerprint: str, base_dtype: str) -> AdapterManifest:
    """Check an adapter folder before loading it: the right base model, intact safetensors weights."""
    manifest = read_manifest(folder)
    if manifest.base_fingerprint != base_fingerprint:
        raise ModelMismatchError(
            f"adapter {manifest.name!r} was trained on base model {manifest.base_fingerprint}, but the "
            f"loaded model is {base_fingerprint}; load the matching base model or re-distill")
    if manifest.base_dtype != base_dtype:
        raise ModelMismatchError(
            f"adapter {manifest.name!r} was trained on a {manifest.base_dtype} model, this one is "
            f"{base_dtype}")
    weights = folder / WEIGHTS
    if not weights.exists():
        if (folder / "adapter_model.bin").exists():
            raise CubeCorruptedError(
                f"adapter {manifest.name!r} has pickled weights (adapter_model.bin), which are never "
                "loaded; convert them to safetensors")
        raise CubeCorruptedError(f"adapter {manifest.name!r} has no {WEIGHTS}")
    if sha256_file(weights) != manifest.weights_sha256:
        raise CubeCorruptedError(
            f"adapter {manifest.name!r}: {weights} does not match the checksum in its manifest "
            "(damaged or edited); re-run distill")
    try:
        json.loads((folder / CONFIG).read_text())
    except (FileNotFoundError, ValueError) as exc:
        raise CubeCorruptedError(f"adapter {manifest.name!r}: {CONFIG} is missing or invalid") from exc
    return manifest
