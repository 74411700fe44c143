"""A supervisor and two agents sharing a MemCube: private notes, a shared team namespace, enforced access.

- ``scout`` researches: it writes private notes under ("agents", "scout", ...) and findings to the
  team namespace ("teams", "launch", ...), where it has write access.
- ``writer`` drafts: it reads the team findings (read-only share) and its own private notes; it can
  neither read scout's private notes nor write to the team namespace.
- ``supervisor`` routes: scout first, then writer, then done.

The agents' "thinking" is deterministic code standing in for a chat model (no model is needed to run
this file); swap in a real model inside the agent functions. Run: ``python examples/langgraph_multi_agent.py``.
"""

from __future__ import annotations

import operator
import tempfile
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from memos_integrations import MemCube
from memos_integrations.errors import AccessDeniedError
from memos_integrations.langgraph import MemOSSaver, MemOSStore, NamespacePolicy

TEAM = ("teams", "launch", "findings")


class TeamState(TypedDict):
    task: str
    done: Annotated[list[str], operator.add]
    report: str


def build(cube: MemCube) -> tuple[Any, MemOSStore]:
    policy = NamespacePolicy(cube)
    policy.grant(("teams", "launch"), "scout", "write")
    policy.grant(("teams", "launch"), "writer", "read")
    store = MemOSStore(cube, index={"fields": ["text"]}, policy=policy)

    def scout(state: TeamState) -> dict[str, Any]:
        me = store.as_principal("scout")
        me.put(("agents", "scout", "notes"), "hunch", {"text": "competitor pricing page looked rushed"})
        me.put(TEAM, "f1", {"text": f"Users asked for offline mode ({state['task']})"})
        me.put(TEAM, "f2", {"text": "Beta churn is highest in week two"})
        return {"done": ["scout"]}

    def writer(state: TeamState) -> dict[str, Any]:
        me = store.as_principal("writer")
        findings = [h.value["text"] for h in me.search(TEAM, query="what do users want?", limit=5)]
        blocked = []
        try:
            me.search(("agents", "scout"), query="pricing")
        except AccessDeniedError:
            blocked.append("scout's private notes")
        try:
            me.put(TEAM, "draft", {"text": "writer cannot write here"})
        except AccessDeniedError:
            blocked.append("writing to the team namespace")
        me.put(("agents", "writer", "drafts"), "d1", {"text": "Launch note: offline mode first"})
        report = "Findings: " + "; ".join(sorted(findings)) + ". Blocked: " + ", ".join(blocked) + "."
        return {"done": ["writer"], "report": report}

    def supervisor(state: TeamState) -> dict[str, Any]:
        return {}

    def route(state: TeamState) -> str:
        for agent in ("scout", "writer"):
            if agent not in state["done"]:
                return agent
        return END

    builder = StateGraph(TeamState)
    builder.add_node("supervisor", supervisor)
    builder.add_node("scout", scout)
    builder.add_node("writer", writer)
    builder.add_edge(START, "supervisor")
    builder.add_conditional_edges("supervisor", route, ["scout", "writer", END])
    builder.add_edge("scout", "supervisor")
    builder.add_edge("writer", "supervisor")
    return builder.compile(checkpointer=MemOSSaver(cube), store=store), store


def main(path: str | None = None) -> str:
    cube = MemCube.init_from_dir(path or tempfile.mkdtemp() + "/team_cube")
    try:
        graph, _ = build(cube)
        out = graph.invoke({"task": "plan the launch", "done": [], "report": ""},
                           {"configurable": {"thread_id": "launch-1", "user_id": "pm"}})
        print(out["report"])
        denied = [e for e in cube.audit_log() if not e["allowed"]]
        print(f"audit: {len(denied)} denied attempts recorded")
        return str(out["report"])
    finally:
        cube.close()


if __name__ == "__main__":
    main()
