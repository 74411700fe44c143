"""A deterministic stand-in chat model for offline tests, docs and the notebook: NOT a language model.

It answers from the memories the middleware put in its system message (quoting the first one), so
a run shows what was recalled without any model download or API key. Use a real chat model
(``init_chat_model("openai:gpt-4.1")``, ``MemOSChatModel`` for local HF models) in real use.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool


class StandInChatModel(BaseChatModel):
    """Deterministic stand-in (not an LLM): replies with the best recalled memory, and records prompts.

    Example:
        .. code-block:: python

            from memos_integrations.langchain import StandInChatModel

            model = StandInChatModel()
            model.invoke("hello").content          # "[stand-in model] I have no memories about that."
            model.seen_system_prompts              # what each call's system message said
    """

    prefix: str = "[stand-in model] "
    seen_system_prompts: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "memos-stand-in"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        system = "\n".join(m.text for m in messages if isinstance(m, SystemMessage))
        self.seen_system_prompts.append(system)
        recalled = [line[2:] for line in system.splitlines() if line.startswith("- ")]
        reply = f"From memory: {recalled[0]}" if recalled else "I have no memories about that."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.prefix + reply))])

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self  # type: ignore[return-value]  # it never calls tools; accepting them keeps agents simple
