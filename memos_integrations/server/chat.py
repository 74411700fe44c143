"""``POST /v1/chat/completions``: an OpenAI-compatible chat route that answers with memory through ``MOS.chat``.

An OpenAI client gains memory by changing its base URL: the last user message is the query, MOS
retrieves from the user's cubes and asks the server's chat model (``MOS(chat_model=...)``). Unless the
request says ``"store": false``, the exchange (the user's message and the answer) is then written to the
user's default cube as two messages, in one write.

Streaming (``"stream": true``) sends Server-Sent Events in OpenAI's chunk format. ``MOS.chat`` returns
a whole answer, so the chunks are that answer cut into words: the first arrives when the answer is
ready, not earlier. The exchange is written after the last answer chunk, if the client is still connected,
and before ``[DONE]``; a client that disconnects mid-stream leaves nothing written (the write is one
transaction, never half of it). uvicorn drops what it cannot deliver without telling the app, so the
stream asks ``request.is_disconnected()`` itself (every 64 chunks, and before the write).
"""


import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..aio import in_thread
from ..errors import InvalidInputError
from .auth import Principal
from .errors import ERRORS, UnsupportedError
from .service import Service


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1, max_length=64)
    content: str | list[dict[str, Any]] | None = None


class ChatIn(BaseModel):
    """OpenAI's request shape; options this server does not use (temperature, tools ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = Field(default=None, min_length=1, max_length=256, description="act as this user (admin keys only)")
    store: bool = Field(default=True, description="remember the exchange in your default cube")
    cube_id: str | None = Field(default=None, min_length=1, max_length=256, description="where to remember it")


class Choice(BaseModel):
    index: int
    message: dict[str, Any]
    finish_reason: Literal["stop"]


class Completion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: dict[str, int]


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    if isinstance(message.content, list):
        return "".join(str(p.get("text", "")) for p in message.content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _pieces(answer: str) -> list[str]:
    """The answer in word-sized chunks that join back to it exactly."""
    out: list[str] = []
    for word in answer.split(" "):
        out.append(word if not out else " " + word)
    return out or [""]


def install(app: FastAPI, service: Service, principal: Callable[..., Principal]) -> None:
    mos = service.mos

    @app.post("/v1/chat/completions", response_model=None, tags=["chat"],
              responses={200: {"model": Completion, "content": {"text/event-stream": {}}}, **ERRORS})
    async def chat_completions(request: Request, body: ChatIn, who: Annotated[Principal, Depends(principal)]) -> Any:
        """OpenAI-compatible chat with memory (``stream`` true or false)."""
        user = await in_thread(service.actor, who, body.user)
        query = next((_text(m) for m in reversed(body.messages) if m.role == "user"), "").strip()
        if not query:
            raise InvalidInputError("send at least one 'user' message with text; it is the question memory answers")
        if mos.chat_model is None:
            raise UnsupportedError("this server has no chat model; start it with `memcube serve --chat-model ...` "
                                   "or MOS(chat_model=...)")
        answer = await in_thread(mos.chat, query, user_id=user, thread_id=f"api-{who.key_id}")
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def remember() -> None:
            if not body.store:
                return
            view = service.view(user, body.cube_id, "write", create=True)
            assert view is not None
            view.add(messages=[{"role": "user", "content": query}, {"role": "assistant", "content": answer}],
                     agent_id=service.agent(who, None), principal=service.principal_name(who, user))

        if not body.stream:
            await in_thread(remember)
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": body.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            })

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            for n, piece in enumerate(_pieces(answer), 1):
                if n % 64 == 0 and await request.is_disconnected():
                    return
                yield chunk({"content": piece})
            yield chunk({}, "stop")
            # the server drops what it cannot deliver without telling the generator, so ask: a client that left
            # before the last chunk went out gets nothing written; one that saw [DONE] can read the exchange back
            if await request.is_disconnected():
                return
            await in_thread(remember)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
