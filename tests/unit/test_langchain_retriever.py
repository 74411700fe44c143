"""MemOSRetriever: per-user hybrid search, metadata it returns, per-call overrides, async in a thread."""

from __future__ import annotations

import threading

import pytest

from memos_integrations import MemCube
from memos_integrations.errors import AccessDeniedError, InvalidInputError
from memos_integrations.langchain import MemOSRetriever


@pytest.fixture
def memories(cube: MemCube) -> MemCube:
    cube.add(
        messages=[{"role": "user", "name": "Alice", "id": "D1:1", "content": "I adopted a cat called Miso yesterday."},
                  {"role": "assistant", "id": "D1:2", "content": "Congratulations on adopting Miso!"}],
        user_id="alice", session_id="s1", timestamp="10:00 am on 5 March, 2024",
    )
    cube.add(messages=[{"role": "user", "id": "D2:1", "content": "My cat Miso loves the garden."}],
             user_id="alice", session_id="s2", timestamp="2024-06-01T09:00")
    cube.add(memory="Bob's cat is called Pixel.", user_id="bob")
    return cube


def test_documents_carry_memory_id_score_kind_time_and_sources(memories: MemCube) -> None:
    docs = MemOSRetriever(cube=memories, user_id="alice").invoke("What is the name of Alice's cat?")
    assert docs and all(d.metadata["user_id"] == "alice" for d in docs)
    top = docs[0]
    assert top.id == top.metadata["memory_id"] and memories.get(top.id).text == top.page_content
    assert top.metadata["kind"] == "message"
    assert top.metadata["sources"] in (["D1:1"], ["D1:2"], ["D2:1"])
    assert top.metadata["event_time"].startswith("2024-")
    assert top.metadata["score"] > 0 and set(top.metadata["ranks"]) <= {"dense", "keyword", "unnamed"}  # balanced: the unnamed leg too


def test_other_users_memories_never_come_back(memories: MemCube) -> None:
    for doc in MemOSRetriever(cube=memories, user_id="bob", k=10).invoke("cat called Miso"):
        assert doc.metadata["user_id"] == "bob"
    with pytest.raises(AccessDeniedError, match="bound to user_id 'bob'"):
        MemOSRetriever(cube=memories, user_id="bob").invoke("cat", user_id="alice")
    with pytest.raises(Exception, match="user_id"):
        MemOSRetriever(cube=memories)  # type: ignore[call-arg]  # the user must be said, even if None


def test_session_time_range_and_k_overrides(memories: MemCube) -> None:
    retriever = MemOSRetriever(cube=memories, user_id="alice", k=10)
    assert {d.metadata["session_id"] for d in retriever.invoke("Miso", session_id="s2")} == {"s2"}
    march = retriever.invoke("Miso", time_from="2024-03-01", time_to="2024-03-31")
    assert march and all(d.metadata["event_time"].startswith("2024-03") for d in march)
    assert len(retriever.invoke("Miso", k=1)) == 1
    scoped = MemOSRetriever(cube=memories, user_id="alice", session_id="s1", kinds=["message"], plan="deep")
    assert {d.metadata["session_id"] for d in scoped.invoke("cat")} == {"s1"}
    with pytest.raises(InvalidInputError, match="unknown retriever arguments"):
        retriever.invoke("Miso", top_n=3)
    with pytest.raises(Exception, match="unknown search plan"):
        MemOSRetriever(cube=memories, user_id="alice", plan="fastest")


def test_unscoped_retriever_is_explicit_and_narrowable(memories: MemCube) -> None:
    everyone = MemOSRetriever(cube=memories, user_id=None, k=10)
    assert {d.metadata["user_id"] for d in everyone.invoke("cat")} == {"alice", "bob"}
    assert {d.metadata["user_id"] for d in everyone.invoke("cat", user_id="bob")} == {"bob"}


async def test_ainvoke_searches_in_a_worker_thread(memories: MemCube, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    search = memories.search

    def spy(*a: object, **kw: object) -> object:
        threads.append(threading.get_ident())
        return search(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(memories, "search", spy)
    docs = await MemOSRetriever(cube=memories, user_id="alice", k=2).ainvoke("Miso")
    assert len(docs) == 2 and threads and threading.get_ident() not in threads


@pytest.mark.parametrize("query", ["", "  \t"])
def test_a_query_without_words_returns_no_documents(memories: MemCube, query: str) -> None:
    assert MemOSRetriever(cube=memories, user_id="alice").invoke(query) == []


def test_a_pasted_query_longer_than_the_cube_takes_is_searched(memories: MemCube) -> None:
    docs = MemOSRetriever(cube=memories, user_id="alice", k=1).invoke("cat called Miso " * 2_500)
    assert docs and docs[0].metadata["user_id"] == "alice"


def test_an_unbound_retriever_acts_for_the_runs_user(memories: MemCube) -> None:
    everyone = MemOSRetriever(cube=memories, user_id=None, k=10)
    assert {d.metadata["user_id"] for d in everyone.invoke("cat", config={"configurable": {"user_id": "bob"}})} == {"bob"}
    with pytest.raises(AccessDeniedError):  # a per-call user that disagrees with the run's
        everyone.invoke("cat", user_id="alice", config={"configurable": {"user_id": "bob"}})


@pytest.mark.parametrize("use_async", [False, True])
async def test_async_returns_what_sync_returns(memories: MemCube, use_async: bool) -> None:
    retriever = MemOSRetriever(cube=memories, user_id="alice", k=3)
    for query, kwargs in [("Miso", {}), ("cat", {"session_id": "s2"}), ("  ", {})]:
        expected = retriever.invoke(query, **kwargs)
        got = await retriever.ainvoke(query, **kwargs) if use_async else retriever.invoke(query, **kwargs)
        assert got == expected
