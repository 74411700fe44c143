"""The memory service: REST (and MCP at ``/mcp``) over MOS, with API keys and limits (the ``[server]`` extra).

    memcube keys create --home ./mos_home --user alice
    memcube serve --home ./mos_home --host 127.0.0.1 --port 8765

In Python: ``create_app(MOS(home), keys=KeyStore.open(home))`` is an ASGI app for any ASGI server.
Nothing here is imported by ``import memos_integrations``; importing this package needs fastapi.
"""

from __future__ import annotations

from typing import Any

from ..errors import require

require("fastapi", "server")

from ..storage.keys import KeyStore  # noqa: E402
from .app import create_app  # noqa: E402
from .auth import Authenticator, Principal, authenticate  # noqa: E402
from .limits import Limits  # noqa: E402

__all__ = ["Authenticator", "KeyStore", "Limits", "Principal", "authenticate", "create_app", "serve"]


def serve(home: str, *, host: str = "127.0.0.1", port: int = 8765, limits: Limits | None = None,
          chat_model: Any = None, log_level: str = "info", query_precision: str = "auto",
          embed_process: bool | None = None) -> None:
    """Run the service on ``home`` with uvicorn until interrupted (what ``memcube serve`` calls).

    ``query_precision``: how MiniLM embeds search queries (``auto``, ``int8`` or ``fp32``; see ``serving_embedder``).
    ``embed_process``: embed them in a child process (None: where torch is installed; see ``serving_embedder``).
    """
    require("uvicorn", "server")
    import uvicorn

    from ..mos import MOS
    from . import gc_settle
    from .service import embed_process_default, serving_embedder

    if embed_process is None:
        embed_process = embed_process_default()
    # MiniLM homes: concurrent searches share one forward pass (in a child process with embed_process)
    embedder = serving_embedder(home, query_precision, embed_process)
    mos = MOS(home, chat_model=chat_model, embedder=embedder, embedder_strict=False)  # a cube built otherwise: its own
    gc_settle.install(mos)  # many cubes' objects frozen out of the full collections (server/gc_settle.py)
    keys = KeyStore.open(mos.home / "mos.db")
    try:
        uvicorn.run(create_app(mos, keys=keys, limits=limits), host=host, port=port, log_level=log_level)
    finally:
        keys.close()
        mos.close()
        if embedder is not None:
            embedder.close()
