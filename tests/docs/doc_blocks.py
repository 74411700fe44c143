"""Find the ```python blocks of a Markdown page and run them offline, for tests/docs.

A block runs as written except for the substitutions in ``SUBSTITUTIONS``: each replaces something
that cannot run here (an API key, a model download) by a stand-in, and says why. Nothing else in a
block is changed, so a block that passes is the block a reader copies.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NOT_RUN = "<!-- not-run -->"  # put on the line before a fence whose block truly cannot run offline


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    index: int  # among the blocks of its language in the file
    heading: str  # the nearest heading above it
    line: int  # 1-based line of its first code line
    code: str
    not_run: bool

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")[:40] or "top"
        return f"{self.index}-{slug}"


def fenced_blocks(path: Path, lang: str = "python") -> list[Block]:
    """The blocks fenced as ```<lang>, in order, each with the heading above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    heading, previous, i = "", "", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fence_lang, start = line[3:].strip(), i + 1
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                i += 1
            if fence_lang == lang:
                blocks.append(Block(path, len(blocks), heading, start + 1, "\n".join(lines[start:i]) + "\n",
                                    previous.strip() == NOT_RUN))
        elif line.startswith("#"):
            heading = line.lstrip("#").strip()
        if line.strip():
            previous = line
        i += 1
    return blocks


@dataclass(frozen=True)
class Substitution:
    pattern: str
    replacement: str  # may name ``{tiny_model}``; "_StandInChatModel" is bound in every namespace
    why: str


# The stand-ins. Every one of them replaces a thing a reader supplies (a key, a checkpoint) and
# leaves the code that uses it untouched.
SUBSTITUTIONS: tuple[Substitution, ...] = (
    Substitution(
        r"""init_chat_model\(\s*["'](?:openai|anthropic):[^"']+["']\s*\)""", "_StandInChatModel()",
        "a hosted chat model needs an API key and the network. StandInChatModel is a labelled, deterministic "
        "stand-in (not a language model): it answers by quoting the first memory in its system message, so "
        "the output still shows what memory was recalled.",
    ),
    Substitution(
        r"""["'](?:openai|anthropic):[^"'\s]+["']""", "_StandInChatModel()",
        "the same, where a provider string is passed to create_agent(model=...).",
    ),
    Substitution(
        r"""["'][^"'\s]*Qwen2\.5-0\.5B-Instruct["']""", "{tiny_model}",
        "a 0.5B checkpoint is a download and minutes of CPU. The stand-in is a directory holding a tiny "
        "random-weight Llama and a byte-level tokenizer (memos_integrations.models.testing."
        "save_tiny_checkpoint), loaded by the same from_pretrained, KV-cache and LoRA code; its text is noise.",
    ),
)


def offline(code: str, tiny_model: Path | None = None) -> str:
    """``code`` with the stand-ins of ``SUBSTITUTIONS`` put in."""
    for sub in SUBSTITUTIONS:
        replacement = sub.replacement.replace("{tiny_model}", repr(str(tiny_model)))
        code = re.sub(sub.pattern, lambda _m, r=replacement: r, code)
    return code


def new_namespace() -> dict[str, Any]:
    """A fresh ``__main__``-like namespace with the stand-in chat model bound under a private name."""
    from memos_integrations.langchain import StandInChatModel

    return {"__name__": "__main__", "_StandInChatModel": StandInChatModel}


def execute(code: str, namespace: dict[str, Any], filename: str) -> None:
    """Run ``code`` in ``namespace``; a block with top-level ``await`` runs in a fresh event loop."""
    compiled = compile(code, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    result = eval(compiled, namespace)  # noqa: S307 - the code is this repository's own documentation
    if inspect.iscoroutine(result):
        asyncio.run(result)


def close_all(namespace: dict[str, Any]) -> None:
    """Close the cubes and MOS instances a block left open (releases SQLite and Chroma handles)."""
    from memos_integrations import MOS, MemCube

    for value in list(namespace.values()):
        if isinstance(value, (MemCube, MOS)):
            value.close()


def forget_chroma_clients() -> None:
    """Drop chromadb's process-wide client cache; call it only once the examples' cubes are closed.

    Each example is a separate program, but here they share one process. chromadb caches one client
    system per path *string*, and a cube opened at a relative path ("./my_cube", as the README and
    docs/core.md both do) hands Chroma that relative string, so the same relative path in two working
    directories reuses the first one's client and breaks ("Error in compaction"). Known bug, reported:
    ChromaIndex.persistent should resolve its path. Until then, forget the cache between examples.
    """
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient.clear_system_cache()
