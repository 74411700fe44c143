"""Every ```python block of README.md runs, offline, each in a fresh namespace and directory; the CLI
block's commands run as subprocesses and in-process.

The README's blocks are self-contained, so each gets a new namespace and ``chdir(tmp_path)``. What
cannot run here is replaced by the stand-ins listed, with the reason, in ``doc_blocks.SUBSTITUTIONS``:
a hosted chat model (``"openai:..."``) becomes ``StandInChatModel``, and a local checkpoint path becomes
a tiny random-weight Llama directory. The CLI block's first commands (up to ``search``) run as separate
processes, as a user types them; the later ones run through the same ``main(argv)`` in this process
(each separate process costs ~3 s of CPU in imports; tests/integration/test_cli.py checks exit codes).
The expected strings below check that each face's example really
reaches its memory, not only that it raises nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from doc_blocks import ROOT, close_all, execute, fenced_blocks, forget_chroma_clients, new_namespace, offline

README = ROOT / "README.md"
BLOCKS = fenced_blocks(README)

# heading -> text the block's output must contain (the memory the example is about)
EXPECTED = {
    "The core in 15 lines": ["['D1:3']", "genmaicha"],
    "LangChain": ["Pixel", "[stand-in model] From memory: Maya's beagle is called Pixel."],
    "LangGraph": ["[stand-in model] From memory: I moved to Porto last month.", "'users', 'alice'"],
    "LlamaIndex": ["Lena's wedding is in Porto in June."],
}


def test_readme_has_an_example_per_face() -> None:
    assert [b.heading for b in BLOCKS] == [
        "The core in 15 lines", "LangChain", "LangGraph", "LlamaIndex", "Local models: KV caches and LoRA adapters",
    ]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                      request: pytest.FixtureRequest) -> None:
    if block.not_run:
        pytest.skip("marked <!-- not-run -->")
    tiny = request.getfixturevalue("tiny_model") if "Qwen2.5" in block.code else None
    monkeypatch.chdir(tmp_path)
    namespace = new_namespace()
    try:
        execute(offline(block.code, tiny), namespace, f"{README}:{block.line}")
    finally:
        close_all(namespace)
        forget_chroma_clients()
    out = capsys.readouterr().out
    for expected in EXPECTED.get(block.heading, []):
        assert expected in out, f"README block {block.id!r} printed:\n{out}"


CHAT = [{"role": "user", "name": "Caroline", "id": "D1:3", "content": "I went to a support group yesterday."},
        {"role": "assistant", "name": "Melanie", "id": "D1:4", "content": "That's brave of you, Caroline!"}]


def test_readme_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI block, command by command: `memcube` is ``python -m memos_integrations.cli``, ``chat.jsonl``
    is a two-message file written here, ``<memory id>`` the first id ``search`` printed."""
    from memos_integrations.cli import main

    (block,) = [b for b in fenced_blocks(README, "bash") if b.heading == "The CLI"]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(m) + "\n" for m in CHAT), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    outputs: dict[str, str] = {}
    for line in block.code.splitlines():
        line = line.split("  #")[0].strip()
        for command in filter(None, (c.strip() for c in line.split("&&"))):
            if "<memory id>" in command:
                command = command.replace("<memory id>", re.search(r"id=(\S+)", outputs["search"]).group(1))
            argv = shlex.split(command)
            assert argv[0] == "memcube", command
            if "search" not in outputs:  # init, add, search: each its own process, reading the last one's cube
                done = subprocess.run([sys.executable, "-m", "memos_integrations.cli", *argv[1:]], cwd=tmp_path,
                                      env=env, capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                outputs[argv[1]] = done.stdout
                continue
            monkeypatch.chdir(tmp_path)
            capsys.readouterr()
            code = main(argv[1:])
            out, err = capsys.readouterr()
            assert code == 0, f"{command}\n{out}\n{err}"
            outputs[argv[1]] = out
    assert "I went to a support group yesterday." in outputs["search"]
    assert outputs["history"].startswith("v1 ")
    assert outputs["import"].startswith("imported 2 memories")
    assert json.loads(outputs["stats"])["items"] == 2
