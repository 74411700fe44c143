"""``memcube serve --workers N``: N uvicorn worker processes serving one MOS home.

Why processes: a search is CPU work (the query's embedding, SQL, ranking) and most of it holds
Python's GIL, so threads in one process top out near one core; N processes use N.

What the workers share, and how:

- **API keys** are read from the home's ``mos.db`` by every worker; a worker trusts a key it verified
  for ``Limits.key_cache_seconds`` (2 s), so ``memcube keys revoke`` reaches every worker within that time.
- **Rate limits** are token buckets in the same ``mos.db`` (:mod:`memos_integrations.storage.rate_limits`),
  one atomic update per request: N workers allow a key its rate once, not N times.
- **Cubes** must be shareable between processes: an embedded cube (vectors in an embedded Chroma
  folder) is held by one process at a time, so ``--workers`` above 1 refuses to start while the home
  has one, and names it. Cubes on PostgreSQL (``postgres_store``) or with vectors on a Chroma server
  qualify. New cubes (``POST /v1/cubes``, a user's first write) are made with ``--cubes-on DSN``
  (PostgreSQL, one schema per cube); without it the workers refuse to create cubes (501) rather than
  make one that only one worker could open.

Each worker builds its own app from the environment variable :data:`ENV` (JSON: home, limits, chat
model spec, new-cube DSN), because uvicorn starts workers as fresh processes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, MemosError

ENV = "MEMCUBE_SERVE_CONFIG"


def embedded_cubes(home: str | Path) -> list[str]:
    """The ids of the home's registered cubes whose vectors are embedded (one process at a time)."""
    from ..cube import read_header
    from ..storage.sql import SQLiteDatabase
    from ..storage.tables.registry import Registry

    db = SQLiteDatabase(Path(home) / "mos.db")
    try:
        rows = Registry(db, str(Path(home) / "mos.db")).cubes()
    finally:
        db.close()
    held = []
    for cube_id, path in rows:
        try:
            mode = read_header(Path(path), verify=False)["config"].get("vector", {}).get("mode", "persistent")
        except MemosError:
            continue  # a missing or broken cube answers its own error when a request opens it
        if mode == "persistent":
            held.append(str(cube_id))
    return held


def new_cube_config(dsn: str | None) -> Any:
    """The config new cubes get under several workers: a PostgreSQL store (and pgvector) on ``dsn``; None without one."""
    if not dsn:
        return None
    from ..config import CubeConfig, postgres_store

    return CubeConfig(store=postgres_store(dsn))


def serve_workers(home: str, *, workers: int, host: str = "127.0.0.1", port: int = 8765, limits: Any = None,
                  chat_model: str | None = None, cubes_on: str | None = None, log_level: str = "info",
                  query_precision: str = "auto", embed_process: bool | None = None) -> None:
    """Run ``workers`` uvicorn processes on ``home`` until interrupted (``memcube serve --workers N``).

    Args:
        home: the MOS home every worker opens.
        workers: how many processes (2 or more; one process is :func:`memos_integrations.server.serve`).
        host, port: where to listen (all workers share the socket).
        limits: a :class:`~memos_integrations.server.limits.Limits` (rate buckets are shared through ``mos.db``).
        chat_model: an ``init_chat_model`` spec or ``"stand-in"``, built in each worker; None: no chat model.
        cubes_on: a PostgreSQL DSN for cubes the service creates; None refuses to create cubes.
        log_level: uvicorn's log level.
        query_precision: how MiniLM embeds search queries in each worker (``auto``, ``int8`` or ``fp32``).
        embed_process: each worker embeds them in its own child process (None: where torch is installed).

    Raises:
        InvalidInputError: ``workers`` below 2, or the home has embedded cubes (named, with what to do).
    """
    import uvicorn

    from .limits import Limits
    from .service import embed_process_default

    if workers < 2:
        raise InvalidInputError("serve_workers runs 2 or more workers; for one, use memcube serve without --workers")
    held = embedded_cubes(home)
    if held:
        shown = ", ".join(repr(c) for c in held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise InvalidInputError(
            f"--workers {workers} needs cubes that several processes can open, but {shown} keep their vectors "
            "embedded (one process at a time); serve this home with one worker, or move those cubes to PostgreSQL "
            "(postgres_store) or a Chroma server")
    limits = limits or Limits()
    config = {"home": str(home), "limits": {**asdict(limits), "cors_origins": list(limits.cors_origins)},
              "chat_model": chat_model, "cubes_on": cubes_on, "query_precision": query_precision,
              "embed_process": embed_process_default() if embed_process is None else embed_process}
    os.environ[ENV] = json.dumps(config)
    uvicorn.run("memos_integrations.server.workers:app_from_env", factory=True, workers=workers, host=host, port=port,
                log_level=log_level)


def app_from_env() -> Any:
    """One worker's app, from :data:`ENV` (uvicorn calls this in each worker process)."""
    from ..mos import MOS
    from ..storage.keys import KeyStore
    from . import gc_settle
    from .app import create_app
    from .limits import Limits
    from .service import serving_embedder

    config = json.loads(os.environ[ENV])
    raw = dict(config["limits"])
    raw["cors_origins"] = tuple(raw.get("cors_origins", ()))
    # a config without "embed_process" (written by an older serve_workers) embeds in the worker, as before
    embedder = serving_embedder(config["home"], config.get("query_precision", "auto"), bool(config.get("embed_process")))
    mos = MOS(config["home"], chat_model=_chat_model(config.get("chat_model")), embedder=embedder, embedder_strict=False)
    gc_settle.install(mos)
    keys = KeyStore.open(mos.home / "mos.db")
    cubes = new_cube_config(config.get("cubes_on"))
    return create_app(mos, keys=keys, limits=Limits(**raw), cube_config=cubes, shared=True)


def _chat_model(spec: str | None) -> Any:
    if not spec:
        return None
    if spec == "stand-in":
        from ..langchain.standin import StandInChatModel

        return StandInChatModel()
    from ..errors import require

    require("langchain.chat_models", "langchain")
    from langchain.chat_models import init_chat_model

    return init_chat_model(spec)
