"""The faces pass the session they act in (``current_session``) when the plan puts working memory first
(issue 14): the LangChain retriever and the LlamaIndex retriever, on a tiny real cube. The LangGraph
store has no hunk: its index items are namespace values without a session, so no working memory."""

from __future__ import annotations

from memos_integrations import MemCube
from memos_integrations.items import MemoryItem

QUERY = "which seats on trains?"


def _cube(cube: MemCube) -> MemoryItem:
    cube.add(memory=["The user prefers window seats on trains.", "Train seats to Lyon cost 40 euros."], user_id="u1")
    return cube.add(memory=["Current task: find a train from Paris to Lyon on Friday."], user_id="u1",
                    session_id="s1", metadata={"partition": "working"})[0]


def test_langchain_retriever_passes_the_runs_session(cube: MemCube) -> None:
    from memos_integrations.langchain import MemOSRetriever

    work = _cube(cube)
    deep = MemOSRetriever(cube=cube, user_id="u1", plan="deep", k=3)
    docs = deep.invoke(QUERY, config={"configurable": {"session_id": "s1"}})
    assert docs[0].metadata["memory_id"] == work.id
    assert deep.invoke(QUERY)[0].metadata["memory_id"] != work.id  # no session named: nothing leads
    # a plan without working_first does not ask for it (a remote cube's search has no such argument)
    plain = MemOSRetriever(cube=cube, user_id="u1", plan="balanced", k=3)
    assert "current_session" not in plain._search_args({"_memos_config": {"configurable": {"session_id": "s1"}}})


def test_llama_index_retriever_passes_the_runs_session(cube: MemCube) -> None:
    from langchain_core.runnables.config import var_child_runnable_config

    from memos_integrations.llama_index import MemOSRetriever

    work = _cube(cube)
    retriever = MemOSRetriever(cube, user_id="u1", plan="deep", similarity_top_k=3)
    assert retriever.retrieve(QUERY)[0].node.metadata["memory_id"] != work.id
    token = var_child_runnable_config.set({"configurable": {"session_id": "s1"}})
    try:
        assert retriever.retrieve(QUERY)[0].node.metadata["memory_id"] == work.id
    finally:
        var_child_runnable_config.reset(token)
