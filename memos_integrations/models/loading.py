"""Loading what users have: a checkpoint folder, a hub id, or a GGUF file, with loader options passed through.

Part of the local-model layer (``models/``); :meth:`LocalRuntime.from_pretrained` and
:class:`~memos_integrations.langchain.chat_model.MemOSChatModel` load through :func:`load_model`.
transformers reports bad input in many shapes (``ValueError``, ``OSError``, ``struct.error``, a
hub message for a local typo); here every one becomes a :class:`~memos_integrations.errors.ModelLoadError`
that says what to pass instead.

GGUF files are de-quantised by transformers to float32 on every load (seconds to minutes):
:func:`convert_gguf` writes the result once as a safetensors folder, which later loads read directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, ModelNotFoundError, require

GGUF_MAGIC = b"GGUF"
_CONVERTED = "memos-converted.json"  # marks a finished conversion (written last)


def resolve_source(name_or_path: str | Path, gguf_file: str | None = None) -> tuple[str, str | None]:
    """``(folder or hub id, gguf file name or None)`` for what the user passed, checked on disk.

    A path to a ``.gguf`` file is split into its folder and file name. A local path that does not
    exist, a file that is not GGUF, and a folder without ``config.json`` (and no ``gguf_file``) are
    refused before transformers sees them (it would ask the hub for them).

    Raises:
        ModelNotFoundError: the path does not exist.
        ModelLoadError: the path exists but is not a model.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    # a hub id is "name" or "owner/name"; anything else is meant as a local path
    looks_local = path.exists() or text.startswith((".", "/", "~")) or text.endswith(".gguf") or text.count("/") > 1
    if not looks_local:
        return text, gguf_file  # a hub id
    if path.is_file():
        if gguf_file is not None:
            raise ModelLoadError(f"{path} is a file; pass its folder with gguf_file={gguf_file!r}, or the file alone")
        check_gguf(path)
        return str(path.parent), path.name
    if not path.exists():
        raise ModelNotFoundError(f"no model at {path}; pass an existing checkpoint folder, a .gguf file or a hub id")
    if gguf_file is not None:
        check_gguf(path / gguf_file)
        return str(path), gguf_file
    if not (path / "config.json").is_file():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        hint = f" (it holds {ggufs[0]!r}: pass gguf_file={ggufs[0]!r})" if ggufs else ""
        raise ModelLoadError(f"{path} has no config.json, so it is not a transformers checkpoint{hint}")
    return str(path), None


def check_gguf(path: Path) -> None:
    """Refuse a missing file or one that does not start with the GGUF magic bytes."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"no GGUF file at {path}; check the path") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path} ({exc}); pass a readable .gguf file") from exc
    if head != GGUF_MAGIC:
        raise ModelLoadError(
            f"{path} is not a model: it is neither a GGUF file (no GGUF magic bytes) nor a checkpoint folder; "
            "pass a folder with config.json and weights, a .gguf file, or a hub id")


def load_model(name_or_path: str | Path, *, gguf_file: str | None = None, device: str | None = None,
               **loader_kwargs: Any) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode.

    Args:
        name_or_path: a checkpoint folder, a hub id, or a ``.gguf`` file.
        gguf_file: the GGUF file inside ``name_or_path`` (a folder or hub repo).
        device: a torch device to move the model to.
        **loader_kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (``revision``,
            ``attn_implementation``, ``dtype`` (default ``"auto"``), ``quantization_config``, ...);
            ``revision``, ``trust_remote_code`` and ``token`` also go to the tokenizer.

    Returns:
        The model and its tokenizer.

    Raises:
        ModelNotFoundError: a local path that does not exist.
        ModelLoadError: not a model, a GGUF file the installed ``gguf``/transformers cannot read, or
            a hub id that cannot be fetched (offline).
    """
    require("transformers", "local")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, gguf = resolve_source(name_or_path, gguf_file)
    if gguf is not None:
        require("gguf", "gguf")
    loader_kwargs.setdefault("dtype", "auto")
    tok_kwargs: dict[str, Any] = {k: loader_kwargs[k] for k in ("revision", "trust_remote_code", "token") if k in loader_kwargs}
    if gguf is not None:
        tok_kwargs["gguf_file"] = gguf
    auto: Any = AutoModelForCausalLM  # its stubs do not type from_pretrained's arguments
    try:
        model = auto.from_pretrained(source, gguf_file=gguf, **loader_kwargs) if gguf else \
            auto.from_pretrained(source, **loader_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **tok_kwargs)
    except (ValueError, OSError, KeyError, struct.error, NotImplementedError) as exc:
        what = f"GGUF file {gguf!r} in {source}" if gguf else source
        hint = ("the installed gguf/transformers cannot read it (upgrade them, or convert the file to a "
                "safetensors folder with llama.cpp's tools and pass that folder)") if gguf else \
            "pass a local checkpoint folder (with config.json and weights) or a .gguf file"
        raise ModelLoadError(f"cannot load {what}: {str(exc)[:300]}; {hint}") from exc
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer


def gguf_digest(path: Path) -> str:
    """A cheap identity of a GGUF file (size, and the hash of its first and last MiB)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def convert_gguf(gguf_path: str | Path, out_dir: str | Path) -> Path:
    """De-quantise a GGUF file once into a safetensors checkpoint folder, reused by later calls.

    The folder is written next to a temporary name and renamed into place, and records the GGUF
    file's digest, so a changed GGUF file is converted again and a half-written folder is never
    read. The saved weights are exactly those the GGUF load produced (same logits, same fingerprint).

    Raises:
        ModelNotFoundError: ``gguf_path`` does not exist.
        ModelLoadError: it is not a GGUF file this gguf/transformers can read.
    """
    src = Path(gguf_path).expanduser()
    check_gguf(src)
    out = Path(out_dir).expanduser()
    digest = gguf_digest(src)
    if _converted(out, digest):
        return out
    model, tokenizer = load_model(src, dtype="float32")  # what de-quantisation yields
    # transformers refuses to save a model it considers quantised; after de-quantisation it is plain
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _CONVERTED).write_text(json.dumps({"gguf_file": src.name, "gguf_digest": digest}))
    if _converted(out, digest):  # another process finished first: keep its folder
        shutil.rmtree(tmp, ignore_errors=True)
        return out
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out


def _converted(out: Path, digest: str) -> bool:
    try:
        return bool(json.loads((out / _CONVERTED).read_text()).get("gguf_digest") == digest)
    except (OSError, ValueError):
        return False  # absent or damaged: convert (again)
