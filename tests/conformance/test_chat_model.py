"""langchain-tests' chat model suites against MemOSChatModel on a tiny random-weight checkpoint.

The checkpoint (a 2-layer Llama config with the offline byte tokenizer) is written once per session
and loaded through the real ``from_pretrained`` path. Capability flags say honestly what a local
transformers model here supports: no tool calling, structured output, JSON mode or multimodal
input; token usage yes, with ``cache_read`` input tokens served from the thread's KV cache.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from memos_integrations.langchain.chat_model import MemOSChatModel  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see tests/conftest.py


@functools.cache
def checkpoint() -> str:
    from memos_integrations.models.testing import save_tiny_checkpoint

    return str(save_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="memos-tiny-")) / "tiny-llama"))


class _Flags:
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return MemOSChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": checkpoint()}

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict[str, list[str]]:  # type: ignore[override]
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}


class TestMemOSChatModelUnit(_Flags, ChatModelUnitTests):
    pass


class TestMemOSChatModelIntegration(_Flags, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": checkpoint(), "max_tokens": 8}  # short answers keep the suite fast

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        llm = MemOSChatModel(**self.chat_model_params)
        cfg = {"configurable": {"thread_id": "cache-read"}}
        llm.invoke("Hello there, remember me", config=cfg)
        if stream:
            full: Any = None
            for chunk in llm.stream("Hello there, remember me", config=cfg):
                full = chunk if full is None else full + chunk
            message = full
        else:
            message = llm.invoke("Hello there, remember me", config=cfg)
        assert message.usage_metadata["input_token_details"]["cache_read"] > 0
        return message  # type: ignore[no-any-return]
