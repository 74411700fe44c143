"""Memory in a cube for LlamaIndex: the memory block, both chat stores, the retriever and the embedding."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.llms import ChatMessage  # noqa: E402
from llama_index.core.memory import Memory  # noqa: E402
from llama_index.core.storage.chat_store import SimpleChatStore  # noqa: E402
from llama_index.core.storage.chat_store.base_db import MessageStatus  # noqa: E402
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters  # noqa: E402

from memos_integrations.errors import InvalidFilterError, InvalidInputError  # noqa: E402
from memos_integrations.llama_index import (  # noqa: E402
    MemOSAsyncChatStore,
    MemOSChatStore,
    MemOSEmbedding,
    MemOSMemoryBlock,
    MemOSRetriever,
)


def msg(role: str, text: str) -> ChatMessage:
    return ChatMessage(role=role, content=text)


def exercise_chat_store(store: Any) -> list[Any]:
    seen: list[Any] = []
    store.set_messages("a", [msg("user", "one"), msg("assistant", "two")])
    store.add_message("a", msg("user", "three"))
    store.add_message("b", msg("user", "other"))
    seen.append([m.content for m in store.get_messages("a")])
    seen.append(store.delete_message("a", 1).content)
    seen.append(store.delete_message("a", 9))
    seen.append(store.delete_last_message("a").content)
    seen.append([m.content for m in store.get_messages("a")])
    seen.append(sorted(store.get_keys()))
    seen.append([m.content for m in store.delete_messages("b") or []])
    seen.append(store.get_messages("b"))
    store.set_messages("a", [msg("user", "reset")])
    seen.append([m.content for m in store.get_messages("a")])
    return seen


def test_chat_store_matches_simple(cube: Any) -> None:
    assert exercise_chat_store(MemOSChatStore.from_defaults(cube)) == exercise_chat_store(SimpleChatStore())


def test_chat_store_persists(cube: Any, tmp_path: Any, embedder: Any) -> None:
    from memos_integrations import MemCube

    MemOSChatStore.from_defaults(cube).add_message("k", msg("user", "kept"))
    cube.close()
    with MemCube.init_from_dir(tmp_path / "cube", embedder=embedder) as again:
        assert [m.content for m in MemOSChatStore.from_defaults(again).get_messages("k")] == ["kept"]


async def test_async_db_chat_store_queue(cube: Any) -> None:
    store = MemOSAsyncChatStore.from_defaults(cube)
    await store.set_messages("s", [msg("user", f"m{i}") for i in range(5)])
    assert await store.count_messages("s") == 5
    assert [m.content for m in await store.archive_oldest_messages("s", 2)] == ["m0", "m1"]
    assert [m.content for m in await store.get_messages("s")] == ["m2", "m3", "m4"]
    assert [m.content for m in await store.get_messages("s", status=MessageStatus.ARCHIVED)] == ["m0", "m1"]
    assert [m.content for m in await store.get_messages("s", status=None, limit=2, offset=1)] == ["m1", "m2"]
    assert [m.content for m in await store.delete_oldest_messages("s", 1)] == ["m2"]
    await store.add_messages("s", [msg("user", "m5")], status=MessageStatus.ARCHIVED)
    assert await store.count_messages("s", status=MessageStatus.ARCHIVED) == 3
    await store.delete_messages("s", status=MessageStatus.ARCHIVED)
    assert await store.count_messages("s", status=None) == 2
    seq = cube.store.read("SELECT seq FROM llama_index_chat WHERE key='s' ORDER BY seq")[0][0]
    assert (await store.delete_message("s", seq)).content == "m3"
    assert await store.get_keys() == ["s"]
    with pytest.raises(InvalidInputError):
        await store.add_message("", msg("user", "x"))


async def test_memory_flushes_into_the_cube_and_recalls(cube: Any) -> None:
    block = MemOSMemoryBlock.from_defaults(cube, user_id="alice", top_k=3)
    memory = Memory.from_defaults(session_id="s1", token_limit=60, chat_history_token_ratio=0.5, token_flush_size=20,
                                  memory_blocks=[block], chat_store=MemOSAsyncChatStore.from_defaults(cube))
    turns = [("user", "My cat is called Miso and she loves tuna."), ("assistant", "Noted, Miso likes tuna."),
             ("user", "I work as a nurse at the city hospital."), ("assistant", "Thanks for telling me."),
             ("user", "I am planning a trip to Lisbon in May."), ("assistant", "Lisbon is lovely in May.")]
    for role, text in turns:
        await memory.aput(msg(role, text))
    flushed = cube.get_all(user_id="alice")
    assert flushed and all(it.kind.value == "message" and it.session_id == "s1" for it in flushed)
    assert len(await memory.sql_store.get_messages("s1", status=MessageStatus.ARCHIVED)) == len(flushed)
    out = await memory.aget(input="What is my cat's name?")
    assert any("Miso" in str(m.content) for m in out if m.role.value == "system")


async def test_memory_block_scopes_and_truncates(cube: Any) -> None:
    block = MemOSMemoryBlock.from_defaults(cube, user_id="bob", all_sessions=False)
    await block.aput([msg("user", "I drink oolong."), msg("tool", "")], session_id="x")
    assert [it.text for it in cube.get_all(user_id="bob")] == ["I drink oolong."]
    assert "oolong" in await block.aget([msg("user", "what do I drink?")], session_id="x")
    assert await block.aget([msg("user", "what do I drink?")], session_id="other") == ""
    assert await block.aget([]) == ""
    assert await block.atruncate("- a\n- b", 1) == "- a"
    assert await block.atruncate("- a", 100) is None


def test_retriever_returns_memories_with_metadata(cube: Any) -> None:
    cube.add(memory="Alice prefers window seats.", user_id="alice", kind="preference", metadata={"src": "chat"})
    cube.add(memory="Bob prefers aisle seats.", user_id="bob")
    hits = MemOSRetriever.from_defaults(cube, user_id="alice").retrieve("where does she like to sit?")
    assert [h.node.text for h in hits] == ["Alice prefers window seats."]
    meta = hits[0].node.metadata
    assert meta["kind"] == "preference" and meta["user_id"] == "alice" and meta["src"] == "chat"
    assert meta["version"] == 1 and "dense" in meta["ranks"] and hits[0].node.node_id == meta["memory_id"]
    assert "memory_id" not in hits[0].node.get_content(metadata_mode="llm")
    flt = MetadataFilters(filters=[MetadataFilter(key="src", value="email")])
    assert MemOSRetriever.from_defaults(cube, filters=flt).retrieve("seats") == []


async def test_retriever_async_and_chunks_come_back_as_written(cube: Any) -> None:
    from llama_index.core.schema import TextNode

    from memos_integrations.llama_index import MemOSVectorStore

    MemOSVectorStore.from_defaults(cube=cube, embed_missing=True).add(
        [TextNode(id_="c1", text="Genmaicha is green tea with roasted rice.", metadata={"page": 3})])
    hits = await MemOSRetriever.from_defaults(cube, kinds=["chunk"]).aretrieve("roasted rice tea")
    assert hits[0].node.node_id == "c1" and hits[0].node.metadata["page"] == 3
    assert hits[0].node.metadata["kind"] == "chunk"


def test_retriever_bad_input(cube: Any) -> None:
    with pytest.raises(InvalidInputError):
        MemOSRetriever(cube, similarity_top_k=0)
    with pytest.raises(InvalidFilterError):
        MemOSRetriever(cube, filters=MetadataFilters(filters=[MetadataFilter(key="a b", value=1)]))


async def test_embedding_matches_the_cube(cube: Any) -> None:
    emb = MemOSEmbedding.from_cube(cube)
    assert emb.model_name == cube.embedder.name and emb.fingerprint == cube.embedder.fingerprint
    q = emb.get_query_embedding("hello")
    assert q == pytest.approx(cube.embedder.embed_query("hello").tolist(), abs=1e-6)
    texts = await emb.aget_text_embedding_batch(["a", "b"])
    assert len(texts) == 2 and len(texts[0]) == cube.embedder.dimension
    assert await emb.aget_query_embedding("hello") == pytest.approx(q, abs=1e-6)
