"""MemOSChatMessageHistory: persisted per session, optionally remembered, atomic, RunnableWithMessageHistory."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from memos_integrations import MemCube
from memos_integrations.errors import AccessDeniedError, InvalidTypeError
from memos_integrations.langchain import MemOSChatMessageHistory


def test_messages_persist_per_session_across_reopen(cube: MemCube, embedder: object) -> None:
    h1 = MemOSChatMessageHistory(cube, "s1")
    h1.add_messages([HumanMessage("hi", name="Alice"), AIMessage("hello!")])
    MemOSChatMessageHistory(cube, "s2").add_user_message("other session")
    path = cube.path
    cube.close()
    reopened = MemCube.init_from_dir(path, embedder=embedder)
    messages = MemOSChatMessageHistory(reopened, "s1").messages
    assert [(type(m), m.content, m.name) for m in messages] == [(HumanMessage, "hi", "Alice"), (AIMessage, "hello!", None)]
    assert all(m.id for m in messages)  # ids assigned, so memories can point at them
    assert reopened.stats()["items"] == 0  # remember=False: a transcript only
    MemOSChatMessageHistory(reopened, "s1").clear()
    assert MemOSChatMessageHistory(reopened, "s1").messages == []
    assert len(MemOSChatMessageHistory(reopened, "s2").messages) == 1
    reopened.close()


def test_remember_reads_human_and_ai_messages_into_memory(cube: MemCube) -> None:
    history = MemOSChatMessageHistory(cube, "s1", user_id="alice", agent_id="helper", remember=True)
    history.add_messages([
        SystemMessage("You are terse."),
        HumanMessage("My sister Jo lives in Lisbon.", id="m1"),
        AIMessage("", tool_calls=[{"name": "save_memory", "args": {"text": "x"}, "id": "t1"}]),
        ToolMessage("Saved.", tool_call_id="t1"),
        AIMessage("Noted, Lisbon it is.", id="m2"),
    ])
    items = cube.get_all(user_id="alice")
    assert [(i.text, i.sources, i.session_id, i.kind.value) for i in items] == [
        ("My sister Jo lives in Lisbon.", ["m1"], "s1", "message"),
        ("Noted, Lisbon it is.", ["m2"], "s1", "message"),
    ]
    assert items[0].metadata["role"] == "user" and items[1].metadata["role"] == "assistant"
    assert cube.search("where does Jo live?", user_id="alice")[0].item.sources == ["m1"]
    history.clear()
    assert cube.stats()["items"] == 2  # clearing the transcript keeps long-term memory


def test_a_failed_memory_write_keeps_the_transcript(cube: MemCube, monkeypatch: pytest.MonkeyPatch) -> None:
    history = MemOSChatMessageHistory(cube, "s1", user_id="alice", remember=True)

    def broken(*a: object, **kw: object) -> None:
        raise RuntimeError("embedder down")

    monkeypatch.setattr(cube.text_mem, "add_items", broken)
    with pytest.raises(RuntimeError):  # not a refusal of the input: the caller must hear of it
        history.add_messages([HumanMessage("remember me")])
    assert [m.content for m in history.messages] == ["remember me"]  # but the turn is in the transcript
    with pytest.raises(InvalidTypeError, match="LangChain messages"):
        history.add_messages([HumanMessage("ok"), "not a message"])  # type: ignore[list-item]
    assert [m.content for m in history.messages] == ["remember me"]


def test_an_over_long_message_stays_in_the_transcript_and_is_remembered_whole(cube: MemCube) -> None:
    history = MemOSChatMessageHistory(cube, "s1", user_id="alice", remember=True)
    pasted = "log line\n" * 4_000  # 36,000 characters, above the cube's 32,000
    history.add_messages([HumanMessage(pasted), AIMessage("That log shows a timeout."), HumanMessage("  ")])
    assert [len(m.content) for m in history.messages] == [len(pasted), 25, 2]  # the whole turn, as sent
    remembered = {i.text.strip() for i in cube.get_all(user_id="alice", kinds=["message"])}
    assert remembered == {pasted.strip(), "That log shows a timeout."}  # the pasted log whole, indexed by parts
    hit = cube.search("log line", user_id="alice", top_k=1)[0]
    assert cube.get(hit.item.metadata.get("part_of", hit.item.id)).text.strip() == pasted.strip()


def test_sessions_are_per_user_and_unscoped_writes_stay_out_of_a_users(cube: MemCube) -> None:
    MemOSChatMessageHistory(cube, "shared", user_id="alice").add_user_message("alice's words")
    bob = MemOSChatMessageHistory(cube, "shared", user_id="bob")
    # bob's "shared" is his own: it answers as a session nobody used, so he learns nothing of alice's
    assert bob.messages == [] == MemOSChatMessageHistory(cube, "never-used", user_id="bob").messages
    bob.add_user_message("bob's words")
    assert [m.content for m in bob.messages] == ["bob's words"]
    bob.clear()  # his messages only
    assert [m.content for m in MemOSChatMessageHistory(cube, "shared", user_id="alice").messages] == ["alice's words"]
    with pytest.raises(AccessDeniedError, match="belongs to another user") as refused:  # unscoped: read, never write
        MemOSChatMessageHistory(cube, "shared").add_user_message("nobody's words")
    assert "alice" not in str(refused.value)
    with pytest.raises(AccessDeniedError):
        MemOSChatMessageHistory(cube, "shared").clear()
    assert [m.content for m in MemOSChatMessageHistory(cube, "shared").messages] == ["alice's words"]
    denied = [row for row in cube.audit_log(10) if not row["allowed"]]
    assert len(denied) == 2 and denied[0]["target"] == "session:shared"
    with pytest.raises(InvalidTypeError):
        MemOSChatMessageHistory(cube, "  ")


def test_works_with_runnable_with_message_history(cube: MemCube) -> None:
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    model = FakeListChatModel(responses=["Nice to meet you, Alice.", "You are Alice."])
    chain = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: MemOSChatMessageHistory(cube, session_id, user_id="alice", remember=True),
        input_messages_key="question",
        history_messages_key="history",
    )
    config = {"configurable": {"session_id": "s1"}}
    chain.invoke({"question": "I'm Alice."}, config=config)
    assert chain.invoke({"question": "Who am I?"}, config=config).content == "You are Alice."
    texts = [m.content for m in MemOSChatMessageHistory(cube, "s1").messages]
    assert texts == ["I'm Alice.", "Nice to meet you, Alice.", "Who am I?", "You are Alice."]
    assert len(cube.get_all(user_id="alice", session_id="s1")) == 4


async def test_async_methods_run_in_worker_threads(tmp_path: Path, cube: MemCube, monkeypatch: pytest.MonkeyPatch) -> None:
    history = MemOSChatMessageHistory(cube, "s1")
    threads: list[int] = []
    read = cube.store.db.read

    def spy(*a: object, **kw: object) -> object:
        threads.append(threading.get_ident())
        return read(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(cube.store.db, "read", spy)
    await history.aadd_messages([HumanMessage("async hello")])
    assert [m.content for m in await history.aget_messages()] == ["async hello"]
    await history.aclear()
    assert await history.aget_messages() == []
    assert threads and threading.get_ident() not in threads


def test_an_unbound_history_acts_for_the_runs_user(cube: MemCube) -> None:
    from langchain_core.runnables import RunnableLambda

    def add(text: str) -> None:
        MemOSChatMessageHistory(cube, "s-bob", remember=True).add_user_message(text)

    RunnableLambda(add).invoke("Bob's words", config={"configurable": {"user_id": "bob"}})
    assert [i.user_id for i in cube.get_all()] == ["bob"]
    RunnableLambda(add).invoke("Alice's words", config={"configurable": {"user_id": "alice"}})  # her own "s-bob"
    assert [m.content for m in MemOSChatMessageHistory(cube, "s-bob", user_id="alice").messages] == ["Alice's words"]
    assert [m.content for m in MemOSChatMessageHistory(cube, "s-bob", user_id="bob").messages] == ["Bob's words"]


@pytest.mark.parametrize("use_async", [False, True])
async def test_async_methods_return_what_sync_ones_do(cube: MemCube, use_async: bool) -> None:
    history = MemOSChatMessageHistory(cube, "s1", user_id="alice", remember=True)
    turn = [HumanMessage("My sister Jo lives in Lisbon.", id="m1"), AIMessage("Noted.", id="m2")]
    if use_async:
        await history.aadd_messages(turn)
        got = await history.aget_messages()
    else:
        history.add_messages(turn)
        got = history.messages
    assert got == turn and [i.sources for i in cube.get_all(user_id="alice")] == [["m1"], ["m2"]]
    if use_async:
        await history.aclear()
    else:
        history.clear()
    assert history.messages == []


def test_two_users_racing_on_a_new_session_each_write_their_own(cube: MemCube) -> None:
    def race(session: str) -> dict[str, str]:
        barrier, outcomes = threading.Barrier(2), {}

        def write(user: str) -> None:
            history = MemOSChatMessageHistory(cube, session, user_id=user)
            barrier.wait()
            try:
                history.add_user_message(f"{user} was here first")
                outcomes[user] = "wrote"
            except AccessDeniedError:
                outcomes[user] = "refused"

        threads = [threading.Thread(target=write, args=(u,)) for u in ("alice", "bob")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return outcomes

    for n in range(4):  # sessions are per user: neither takes the name from the other, whoever comes first
        assert race(f"race-{n}") == {"alice": "wrote", "bob": "wrote"}
        for user in ("alice", "bob"):
            assert [m.content for m in MemOSChatMessageHistory(cube, f"race-{n}", user_id=user).messages] == [
                f"{user} was here first"]
