"""MemOSEmbeddings and MemOSChatModel: the async methods return what the sync ones return."""

from __future__ import annotations

from typing import Any

import pytest

from memos_integrations import MemCube
from memos_integrations.langchain import MemOSEmbeddings


@pytest.mark.parametrize("use_async", [False, True])
async def test_embeddings_async_returns_what_sync_returns(embedder: Any, use_async: bool) -> None:
    embeddings = MemOSEmbeddings(embedder)
    texts = ["genmaicha", "sencha"]
    docs = await embeddings.aembed_documents(texts) if use_async else embeddings.embed_documents(texts)
    query = await embeddings.aembed_query("tea") if use_async else embeddings.embed_query("tea")
    assert docs == embeddings.embed_documents(texts) and query == embeddings.embed_query("tea")


@pytest.mark.parametrize("use_async", [False, True])
async def test_chat_model_async_returns_what_sync_returns(
    cube: MemCube, use_async: bool, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip("torch")
    request.getfixturevalue("one_torch_thread")
    from memos_integrations.langchain.chat_model import MemOSChatModel
    from memos_integrations.models import LocalRuntime
    from memos_integrations.models.testing import byte_tokenizer, tiny_causal_lm

    cube.add(memory="Maya's cat is called Miso.", user_id="maya")
    llm = MemOSChatModel(runtime=LocalRuntime(tiny_causal_lm("gpt2"), byte_tokenizer(), cube=cube, max_new_tokens=4))
    config: Any = {"configurable": {"user_id": "maya"}}
    expected = llm.invoke("cat?", config={"configurable": {"user_id": "maya", "thread_id": "sync"}})
    config["configurable"]["thread_id"] = "async" if use_async else "sync-again"
    got = await llm.ainvoke("cat?", config=config) if use_async else llm.invoke("cat?", config=config)
    assert got.content == expected.content
    assert got.response_metadata["memos"]["memory_ids"] == expected.response_metadata["memos"]["memory_ids"]
    assert got.response_metadata["memos"]["memory_ids"]
