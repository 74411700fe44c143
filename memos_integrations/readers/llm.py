"""The chat backends the LLM reader talks to: any OpenAI-compatible endpoint, or a LangChain chat model.

Both do one thing, :meth:`ChatBackend.complete`: messages (and an optional JSON schema) in, text and
:class:`Usage` out. Retries with exponential backoff (429, 5xx, timeouts, connection errors), the
concurrency limit and the usage accounting are here, once, for both. Synchronous by policy: the
cube's async work runs these calls in its worker thread.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ..errors import ReaderError, require
from .config import ReaderConfig


@dataclass
class Usage:
    """What reading cost: tokens, calls, wall seconds; ``cost`` when prices were configured."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    seconds: float = 0.0
    cost: float | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        cost = None if self.cost is None and other.cost is None else (self.cost or 0.0) + (other.cost or 0.0)
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.calls + other.calls, self.seconds + other.seconds, cost)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Completion:
    text: str
    usage: Usage


def estimate_tokens(text: str) -> int:
    """About four characters per token: used for budgets before a call and when an endpoint reports no usage."""
    return max(1, len(text) // 4)


class ChatBackend(Protocol):
    name: str
    model: str

    def complete(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any] | None, timeout: float) -> Completion: ...


def priced(usage: Usage, config: ReaderConfig) -> Usage:
    if config.prompt_price_per_1k is None and config.completion_price_per_1k is None:
        return usage
    usage.cost = (usage.prompt_tokens * (config.prompt_price_per_1k or 0.0)
                  + usage.completion_tokens * (config.completion_price_per_1k or 0.0)) / 1000.0
    return usage


def with_retries(call: Callable[[], Completion], config: ReaderConfig, retryable: Callable[[BaseException], bool],
                 what: str) -> Completion:
    """``call`` with up to ``config.max_retries`` retries on what ``retryable`` accepts; a :class:`ReaderError` after."""
    delay = config.backoff_s
    for attempt in range(config.max_retries + 1):
        try:
            return call()
        except ReaderError:
            raise
        except Exception as exc:  # classified below; anything not retryable is raised as a ReaderError naming it
            if not retryable(exc) or attempt == config.max_retries:
                raise ReaderError(
                    f"{what} failed after {attempt + 1} attempt(s): {type(exc).__name__}: {str(exc)[:300]}; "
                    "check the endpoint (base_url, model, key) or raise ReaderConfig.max_retries / timeout_s"
                ) from exc
            time.sleep(delay * (1 + random.random() / 4))
            delay *= 2
    raise AssertionError("unreachable")


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` SDK.

    The SDK's own retries are off (``max_retries=0``) so that every backend retries the same way.
    A JSON schema goes as ``response_format``; an endpoint that refuses it (HTTP 400) is asked again
    without, and the reader falls back to a tolerant parse.
    """

    name = "openai"

    def __init__(self, config: ReaderConfig, client: Any = None) -> None:
        openai: Any = require("openai", "openai")
        self.config = config
        self.model = config.model
        self._openai = openai
        if client is None:
            import os

            key = config.api_key.get_secret_value() if config.api_key is not None else os.environ.get(config.api_key_env)
            if not key:
                if config.base_url is None:
                    raise ReaderError(
                        f"no API key: set {config.api_key_env} in the environment or pass api_key=...; a local "
                        "OpenAI-compatible server takes base_url=... and api_key='none'")
                key = "none"
            client = openai.OpenAI(base_url=config.base_url, api_key=key, timeout=config.timeout_s, max_retries=0)
        self.client = client
        self._schema_ok: bool | None = {"auto": None, "json_schema": True, "none": False}[config.structured]
        self._gate = threading.BoundedSemaphore(config.concurrency)

    def _retryable(self, exc: BaseException) -> bool:
        o = self._openai
        if isinstance(exc, (o.RateLimitError, o.APITimeoutError, o.APIConnectionError, o.InternalServerError)):
            return True
        return isinstance(exc, o.APIStatusError) and (exc.status_code == 429 or exc.status_code >= 500)

    def complete(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any] | None, timeout: float) -> Completion:
        kwargs: dict[str, Any] = {
            "model": self.model, "messages": [dict(m) for m in messages], "temperature": self.config.temperature,
            "max_tokens": self.config.max_completion_tokens, "timeout": timeout,
        }
        if schema is not None and self._schema_ok is not False:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {"name": "memories", "schema": dict(schema)}}
        start = time.perf_counter()
        with self._gate:
            try:
                done = with_retries(lambda: self._once(kwargs), self.config, self._retryable, f"{self.model} at {self._where()}")
            except ReaderError as exc:
                cause = exc.__cause__
                if "response_format" in kwargs and self._schema_ok is None and isinstance(cause, self._openai.BadRequestError):
                    self._schema_ok = False  # this endpoint has no structured output: parse tolerantly from now on
                    kwargs.pop("response_format")
                    done = with_retries(lambda: self._once(kwargs), self.config, self._retryable, f"{self.model} at {self._where()}")
                else:
                    raise
        if "response_format" in kwargs:
            self._schema_ok = True
        done.usage.seconds = time.perf_counter() - start
        return done

    def _where(self) -> str:
        return self.config.base_url or "api.openai.com"

    def _once(self, kwargs: dict[str, Any]) -> Completion:
        prompt_chars = sum(len(m.get("content") or "") for m in kwargs["messages"])
        if self.config.stream:
            parts: list[str] = []
            usage = None
            for chunk in self.client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
                if chunk.choices and chunk.choices[0].delta and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
                if getattr(chunk, "usage", None) is not None:
                    usage = chunk.usage
            text = "".join(parts)
        else:
            resp = self.client.chat.completions.create(**kwargs)
            if not resp.choices:
                raise ReaderError(f"{self.model} returned no choices; check the endpoint")
            text = resp.choices[0].message.content or ""
            usage = resp.usage
        if usage is not None:
            u = Usage(int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0), 1)
        else:
            u = Usage(estimate_tokens("x" * prompt_chars), estimate_tokens(text), 1)
        return Completion(text, priced(u, self.config))


class LangChainBackend:
    """Any LangChain ``BaseChatModel`` (hosted, local, or a fake one in tests).

    Usage comes from the reply's ``usage_metadata`` when the model reports it, else it is estimated
    (four characters a token). The timeout is the model's own (LangChain has no per-call timeout).
    """

    name = "langchain"

    def __init__(self, chat_model: Any, config: ReaderConfig) -> None:
        self.chat_model = chat_model
        self.config = config
        self.model = str(getattr(chat_model, "model_name", None) or getattr(chat_model, "model", None)
                         or type(chat_model).__name__)
        self._gate = threading.BoundedSemaphore(config.concurrency)

    @staticmethod
    def _retryable(exc: BaseException) -> bool:
        status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
        return isinstance(exc, (TimeoutError, ConnectionError)) or (isinstance(status, int) and (status == 429 or status >= 500))

    def complete(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any] | None, timeout: float) -> Completion:
        lc = [(m["role"] if m["role"] != "user" else "human", m["content"]) for m in messages]
        if schema is not None:  # no portable structured output in LangChain chat models: ask for the schema in words
            lc[0] = (lc[0][0], lc[0][1] + "\nJSON schema of the reply: " + json.dumps(schema, separators=(",", ":")))
        start = time.perf_counter()

        def once() -> Completion:
            reply = self.chat_model.invoke(lc)
            text = reply.content if isinstance(reply.content, str) else json.dumps(reply.content)
            meta = getattr(reply, "usage_metadata", None) or {}
            prompt = int(meta.get("input_tokens") or estimate_tokens(" ".join(c for _, c in lc)))
            completion = int(meta.get("output_tokens") or estimate_tokens(text))
            return Completion(text, priced(Usage(prompt, completion, 1), self.config))

        with self._gate:
            done = with_retries(once, self.config, self._retryable, f"LangChain model {self.model}")
        done.usage.seconds = time.perf_counter() - start
        return done
