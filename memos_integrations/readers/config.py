"""What a user configures about the LLM reader (a pydantic model: ``CubeConfig(reader=ReaderConfig(...))``).

The API key is never written anywhere: ``api_key`` is excluded from every dump (so ``cube.json``
records ``api_key_env``, the *name* of the environment variable, and not the key), and it is read
from that variable when the client is built if it was not passed in.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Mode = Literal["fast", "fine", "async"]


class ReaderConfig(BaseModel):
    """The LLM reader's model, endpoint, prices, budgets and limits.

    Example:
        >>> cfg = ReaderConfig(model="gpt-4o-mini", api_key="sk-secret", prompt_price_per_1k=0.00015)
        >>> "sk-secret" in cfg.model_dump_json()
        False
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["openai", "langchain"] = Field(
        "openai", description="openai: any OpenAI-compatible endpoint; langchain: a chat model passed as an object")
    model: str = Field("gpt-4o-mini", description="the model name the endpoint knows")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; None means api.openai.com")
    api_key: SecretStr | None = Field(None, exclude=True, description="the key itself; never written to disk")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable read when api_key is not given")
    mode: Mode = Field("fine", description="what cube.add(messages=...) does when no mode is given")
    window_size: int = Field(10, ge=1, le=200, description="messages read together (one or two LLM calls per window)")
    neighbours: int = Field(4, ge=0, le=50, description="existing memories retrieved per candidate for reconciliation")
    prompt_price_per_1k: float | None = Field(None, ge=0, description="price of 1,000 prompt tokens (for result.usage.cost)")
    completion_price_per_1k: float | None = Field(None, ge=0, description="price of 1,000 completion tokens")
    user_token_budget: int | None = Field(None, ge=0, description="tokens one user's windows may spend in this cube, all time")
    cube_token_budget: int | None = Field(None, ge=0, description="tokens all windows of this cube may spend, all time")
    fine_token_budget: int | None = Field(
        None, ge=0, description="tokens one fine-mode add may spend; windows beyond it are left to the queue (fast)")
    fine_latency_s: float | None = Field(
        None, gt=0, description="seconds one fine-mode add may take; windows beyond it are left to the queue (fast)")
    timeout_s: float = Field(60.0, gt=0, description="per LLM call")
    max_retries: int = Field(3, ge=0, le=20, description="retries of one call on 429, 5xx, timeouts, connection errors")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each retry (with jitter)")
    max_attempts: int = Field(3, ge=1, le=100, description="reads of a window before its job is marked failed")
    concurrency: int = Field(4, ge=1, le=256, description="LLM calls in flight at once through one reader")
    structured: Literal["auto", "json_schema", "none"] = Field(
        "auto", description="auto: JSON schema response_format, dropped if the endpoint refuses it")
    stream: bool = Field(False, description="stream completions (server-sent events)")
    temperature: float = Field(0.0, ge=0, le=2)
    max_completion_tokens: int = Field(1024, ge=16, le=65536)
