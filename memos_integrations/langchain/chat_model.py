"""MemOSChatModel: a LangChain ``BaseChatModel`` for local transformers models with MemOS memory.

Where it sits: the LangChain face of the local runtime (:mod:`memos_integrations.models.runtime`).
Who is acting (:func:`memos_integrations.access.resolve_scope`): the model's ``user_id``, else a
per-call ``user_id=``, else the run's context, else ``config["configurable"]``; a run for another user
than the model's is refused and audited. The thread is the run's (``thread_id`` in the context or
``configurable``, where LangGraph's checkpointer puts it), else the model's default. Each call
retrieves the user's memories from the cube (a call without a user is refused when there is a cube:
it would read every user's), reuses the thread's KV cache, routes the user's LoRA adapter, and streams
tokens. Token usage goes in ``usage_metadata`` (``input_token_details["cache_read"]`` = prompt tokens
served from the KV cache) and cache / adapter details in ``response_metadata["memos"]``.

Sync/async policy: generation is synchronous CPU/GPU work; ``ainvoke``/``astream`` use
LangChain's default, which runs the sync path in a worker thread, never on the event loop.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import InputTokenDetails, UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from ..access import resolve_scope
from ..errors import InvalidInputError

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "user", "function": "user",
          "developer": "system", "chat": "user"}
_RUNTIMES: dict[tuple[Any, ...], Any] = {}  # one loaded checkpoint per (path, device, cube)
_RUNTIMES_LOCK = threading.Lock()


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
    return "".join(parts)


def to_chat(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as ``{"role", "content"}`` dicts; consecutive system messages are merged
    into one leading system message (chat templates accept only that)."""
    system: list[str] = []
    chat: list[dict[str, str]] = []
    for m in messages:
        role = _ROLES.get(m.type, "user")
        text = _text(m)
        if role == "system":
            system.append(text)
            continue
        name = getattr(m, "name", None)
        if name and role == "user":
            text = f"{name}: {text}"
        if chat and chat[-1]["role"] == role:  # templates want alternation: merge repeats
            chat[-1]["content"] += "\n\n" + text
        else:
            chat.append({"role": role, "content": text})
    if not chat:  # only system text: templates still need a user turn to answer
        chat.append({"role": "user", "content": ""})
    return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + chat


class MemOSChatModel(BaseChatModel):
    """A local Hugging Face causal LM as a LangChain chat model, with MemOS memory.

    Setup:
        ``pip install 'memos-integrations[local,langchain]'``

    Instantiate:
        .. code-block:: python

            from memos_integrations import MemCube
            from memos_integrations.langchain.chat_model import MemOSChatModel

            cube = MemCube.init_from_dir("./my-cube")
            llm = MemOSChatModel(model="Qwen/Qwen2.5-0.5B-Instruct", cube=cube, max_tokens=256)
            # a GGUF file, with loader options passed through:
            # llm = MemOSChatModel(model="./SmolLM2-135M-Instruct.Q4_1.gguf", cube=cube,
            #                      loader_kwargs={"attn_implementation": "sdpa"})
            # an already-loaded transformers model and tokenizer:
            # llm = MemOSChatModel(model=hf_model, tokenizer=hf_tokenizer, cube=cube)
            # or around an existing runtime (e.g. a tiny random model in tests):
            # llm = MemOSChatModel(runtime=LocalRuntime(model, tokenizer, cube=cube))

    Invoke:
        .. code-block:: python

            cfg = {"configurable": {"thread_id": "t1", "user_id": "alice"}}
            msg = llm.invoke("What is my cat called?", config=cfg)
            msg.usage_metadata["input_token_details"]["cache_read"]   # tokens served from the KV cache
            msg.response_metadata["memos"]                             # cache source, adapter, memories

    Stream:
        .. code-block:: python

            for chunk in llm.stream("Tell me more", config=cfg):
                print(chunk.content, end="")

    Async:
        ``await llm.ainvoke(...)`` and ``llm.astream(...)`` run the same work in a worker thread.
    """

    model_name: str = Field("", alias="model",
                            description="Local folder, hub id or .gguf file of the checkpoint (or a loaded model).")
    hf_model: Any = Field(None, exclude=True, description="An already-loaded transformers model (pass `tokenizer`).")
    tokenizer: Any = Field(None, exclude=True, description="The tokenizer of an already-loaded model.")
    gguf_file: str | None = Field(None, description="The GGUF file inside `model` when that is a folder or hub repo.")
    loader_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to from_pretrained: revision, attn_implementation, quantization_config, ...")
    runtime: Any = Field(None, exclude=True, description="A ready LocalRuntime (overrides `model`).")
    cube: Any = Field(None, exclude=True, description="The MemCube whose memories are used.")
    temperature: float = Field(0.0, ge=0.0, description="0 decodes greedily.")
    max_tokens: int | None = Field(128, ge=1, description="Tokens to generate at most.")
    stop: list[str] | None = Field(None, description="Stop sequences.")
    seed: int = Field(0, description="Seed for sampling when temperature > 0.")
    top_k: int = Field(5, ge=0, description="Memories retrieved per turn (0 disables retrieval).")
    device: str | None = Field(None, description="torch device for a checkpoint loaded from `model`.")
    dtype: str = Field("auto", description="torch dtype for a checkpoint loaded from `model`.")
    user_id: str | None = Field(None, description="The user this model acts for; None takes the run's.")
    thread_id: str | None = Field(None, description="Default thread when the config names none.")
    streaming: bool = Field(False, description="Accepted for compatibility; use .stream().")
    timeout: float | None = Field(None, description="Accepted for compatibility; local calls do not time out.")
    max_retries: int | None = Field(None, description="Accepted for compatibility; nothing to retry locally.")

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _loaded_model(cls, data: Any) -> Any:
        """``model=`` may be a path (``str`` or ``Path``) or an already-loaded model object."""
        if not isinstance(data, dict):
            return data
        for key in ("model", "model_name"):
            value = data.get(key)
            if isinstance(value, Path):
                data = {**data, key: str(value)}
            elif value is not None and not isinstance(value, str):
                data = {k: v for k, v in data.items() if k != key}
                data["hf_model"] = value
        return data
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "memos-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self._name(), "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _name(self) -> str:
        if self.model_name:
            return self.model_name
        if self.runtime is not None:
            return str(self.runtime.model_name)
        if self.hf_model is not None:
            return str(getattr(self.hf_model.config, "_name_or_path", "") or self.hf_model.config.model_type)
        return "local"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="memos", ls_model_name=kwargs.get("model", self._name()),
                                 ls_model_type="chat", ls_temperature=kwargs.get("temperature", self.temperature))
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # -- the runtime -----------------------------------------------------------------------------
    def get_runtime(self) -> Any:
        """The LocalRuntime this model runs on, loading the checkpoint on first use.

        Raises:
            InvalidInputError: neither a model nor a runtime was given, or a loaded model without its tokenizer.
            ModelLoadError: the checkpoint cannot be loaded (see :func:`memos_integrations.models.loading.load_model`).
        """
        if self.runtime is not None:
            return self.runtime
        if self.hf_model is not None:
            if self.tokenizer is None:
                raise InvalidInputError("MemOSChatModel(model=<loaded model>) also needs tokenizer=<its tokenizer>")
            key: tuple[Any, ...] = ("loaded", id(self.hf_model), id(self.tokenizer), id(self.cube))
        elif not self.model_name:
            raise InvalidInputError(
                "MemOSChatModel needs model='<folder, hub id or .gguf file>', model=<loaded model> with "
                "tokenizer=..., or runtime=LocalRuntime(...)")
        else:
            options = json.dumps(self.loader_kwargs, sort_keys=True, default=repr)
            key = (self.model_name, self.gguf_file, f"{self.device}:{self.dtype}", options, id(self.cube))
        with _RUNTIMES_LOCK:  # one copy of the weights per checkpoint, shared by every instance
            if key not in _RUNTIMES:
                from ..models import LocalRuntime

                if self.hf_model is not None:
                    _RUNTIMES[key] = LocalRuntime(self.hf_model, self.tokenizer, cube=self.cube)
                else:
                    loader = {"dtype": self.dtype, **self.loader_kwargs}
                    _RUNTIMES[key] = LocalRuntime.from_pretrained(
                        self.model_name, cube=self.cube, gguf_file=self.gguf_file, device=self.device, **loader)
            return _RUNTIMES[key]

    # -- scope from the run's config ---------------------------------------------------------------
    def _scoped(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Put who is acting (``user_id``) and the thread into the call kwargs, which LangChain passes
        through to ``_generate`` / ``_stream``: binding > per-call kwargs > run context > configurable."""
        cube = self.cube if self.cube is not None else (self.runtime.cube if self.runtime is not None else None)
        audit = cube.audit if cube is not None else None
        run = resolve_scope(bound={"user_id": self.user_id}, config=ensure_config(config), audit=audit,
                            what="this chat model", fields=("user_id",))
        # a per-call user_id= may narrow an unbound model, never name another user than the run's
        user = resolve_scope(bound={"user_id": run.user_id}, context={"user_id": kwargs.get("user_id")},
                             config={}, audit=audit, what="this chat model", fields=("user_id",)).user_id
        out = dict(kwargs)
        if user is None and cube is not None:  # a search without a user would mix every user's memories
            raise InvalidInputError(
                "MemOSChatModel reads memories from its cube and needs a user: bind one (user_id=...), or pass "
                "context={'user_id': ...} or config={'configurable': {'user_id': ...}}"
            )
        thread = kwargs.get("thread_id") or run.session_id or self.thread_id
        for key, value in (("user_id", user), ("thread_id", thread)):
            if value is not None:
                out[key] = str(value)
        return out

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        return super().invoke(input, config, stop=stop, **self._scoped(config, kwargs))

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **self._scoped(config, kwargs))

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        return super().stream(input, config, stop=stop, **self._scoped(config, kwargs))

    def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                stop: list[str] | None = None, **kwargs: Any) -> Any:
        return super().astream(input, config, stop=stop, **self._scoped(config, kwargs))

    # -- generation ------------------------------------------------------------------------------
    def _run(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> Iterator[Any]:
        runtime = self.get_runtime()
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        return runtime.stream(to_chat(messages), thread_id=kwargs.get("thread_id"), user_id=kwargs.get("user_id"),
                              max_new_tokens=max_tokens or runtime.max_new_tokens,
                              temperature=kwargs.get("temperature", self.temperature),
                              stop=stop if stop is not None else self.stop, top_k=self.top_k, seed=self.seed)

    def _metadata(self, gen: Any) -> tuple[UsageMetadata, dict[str, Any]]:
        usage = UsageMetadata(input_tokens=gen.prompt_tokens, output_tokens=gen.completion_tokens,
                              total_tokens=gen.prompt_tokens + gen.completion_tokens,
                              input_token_details=InputTokenDetails(cache_read=gen.reused_tokens))
        meta = {"model_name": self._name(), "model_provider": "memos", "finish_reason": gen.finish_reason,
                "memos": {"cache_source": gen.cache_source, "reused_tokens": gen.reused_tokens,
                          "prefilled_tokens": gen.prompt_tokens - gen.reused_tokens,
                          "cache_reason": gen.cache_reason, "adapter": gen.adapter,
                          "memory_ids": list(gen.memory_ids), "ttft_s": round(gen.ttft_s, 6)}}
        return usage, meta

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        text, final = "", None
        for event in self._run(messages, stop, kwargs):
            text += event.text
            if event.text and run_manager is not None:
                run_manager.on_llm_new_token(event.text)
            final = event.generation or final
        assert final is not None
        usage, meta = self._metadata(final)
        message = AIMessage(content=final.text, usage_metadata=usage, response_metadata=meta)
        return ChatResult(generations=[ChatGeneration(message=message)],
                          llm_output={"model_name": self._name()})

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for event in self._run(messages, stop, kwargs):
            if event.generation is None:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=event.text))
            else:
                usage, meta = self._metadata(event.generation)
                chunk = ChatGenerationChunk(message=AIMessageChunk(
                    content=event.text, usage_metadata=usage, response_metadata=meta, chunk_position="last"))
            if run_manager is not None and event.text:
                run_manager.on_llm_new_token(event.text, chunk=chunk)
            yield chunk
