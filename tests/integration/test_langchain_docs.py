"""Every Python block of docs/langchain.md runs, in order, offline (the chat model is the labelled stand-in)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "langchain.md"
PRELUDE = """
from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from memos_integrations.langchain import StandInChatModel
model = StandInChatModel()      # deterministic stand-in, not a language model
prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
"""


def _as_script(doc: str) -> str:
    doc = re.sub(r'init_chat_model\("[^"]+"\)', "StandInChatModel()", doc)  # no API keys here
    lines = [PRELUDE]
    for block in re.findall(r"```python\n(.*?)```", doc, re.S):
        for line in block.splitlines():
            # top-level `await x` in the docs (as in a notebook) -> run it to completion here
            m = re.match(r"^(\s*)(\w+ = )?await (.*)$", line)
            lines.append(f"{m.group(1)}{m.group(2) or ''}_run({m.group(3)})" if m else line)
    return "\n".join(lines)


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_docs_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = _as_script(DOC.read_text())
    assert script.count("_run(") >= 5  # the Async examples are exercised too
    exec(compile(script, str(DOC), "exec"), {"_run": asyncio.run, "__name__": "docs"})
