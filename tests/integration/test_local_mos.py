"""MOS.chat with MemOSChatModel: the orchestrator's memory-augmented chat on the local runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from memos_integrations.models import LocalRuntime  # noqa: E402
from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm  # noqa: E402


@pytest.mark.usefixtures("one_torch_thread")
def test_mos_chat_runs_on_the_local_chat_model(tmp_path: Path, embedder: Any) -> None:
    from memos_integrations.langchain.chat_model import MemOSChatModel
    from memos_integrations.mos import MOS

    mos = MOS(tmp_path / "home", embedder=embedder)
    try:
        mos.create_user("alice")
        cube_id = mos.create_cube_for_user("alice_notes", owner_id="alice")
        mos.add(memory_content="Alice's favourite tea is genmaicha.", mem_cube_id=cube_id, user_id="alice")
        runtime = LocalRuntime(tiny_causal_lm("llama"), byte_tokenizer(), max_new_tokens=4)
        llm = MemOSChatModel(runtime=runtime)
        first = mos.chat("Which tea do I like?", user_id="alice", model=llm)
        second = mos.chat("Which tea do I like?", user_id="alice", model=llm)
        assert isinstance(first, str) and first == second  # greedy: same prompt, same answer
        assert "mos-alice" in runtime.act_mem.threads()  # MOS's thread id reached the runtime
        assert runtime.act_mem.stats.hits >= 1 and runtime.act_mem.stats.reused_tokens > 0
    finally:
        mos.close()
