"""Isolation between agents: private namespaces, read-only shares, audited denials, nothing half-written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.store.base")

from langgraph.store.base import PutOp  # noqa: E402

from memos_integrations.errors import AccessDeniedError  # noqa: E402
from memos_integrations.langgraph import MemOSStore, NamespacePolicy  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def team(cube: Any) -> tuple[Any, Any, Any]:
    policy = NamespacePolicy(cube)
    policy.grant(("teams", "t"), "a", "write")
    policy.grant(("teams", "t"), "b", "read")
    store = MemOSStore(cube, index=True, policy=policy)
    return store, store.as_principal("a"), store.as_principal("b")


def test_agent_cannot_read_another_agents_private_memories(team: Any) -> None:
    store, a, b = team
    a.put(("agents", "a", "notes"), "n", {"text": "a's secret plan about pricing"})
    b.put(("agents", "b", "notes"), "n", {"text": "b's own note about pricing"})
    with pytest.raises(AccessDeniedError):
        b.get(("agents", "a", "notes"), "n")
    with pytest.raises(AccessDeniedError):
        b.search(("agents", "a"), query="pricing")
    # a search across everything returns only what b may read
    assert {h.namespace for h in b.search((), query="pricing plan", limit=10)} == {("agents", "b", "notes")}
    assert b.list_namespaces() == [("agents", "b", "notes")]
    assert set(store.list_namespaces()) == {("agents", "a", "notes"), ("agents", "b", "notes")}  # admin view


def test_read_only_share_cannot_be_written_and_batch_is_atomic(team: Any, cube: Any) -> None:
    store, a, b = team
    a.put(("teams", "t", "facts"), "f", {"text": "launch is on Monday"})
    assert b.get(("teams", "t", "facts"), "f").value["text"] == "launch is on Monday"
    with pytest.raises(AccessDeniedError, match="may not write"):
        b.batch([PutOp(("agents", "b", "notes"), "ok", {"text": "allowed"}),
                 PutOp(("teams", "t", "facts"), "f", {"text": "overwritten"})])
    assert b.get(("agents", "b", "notes"), "ok") is None  # the allowed half did not run either
    assert a.get(("teams", "t", "facts"), "f").value["text"] == "launch is on Monday"
    denied = [e for e in cube.audit_log() if not e["allowed"]]
    assert denied and denied[0]["principal"] == "b" and denied[0]["target"] == "ns:teams.t.facts"


def test_unknown_agent_sees_nothing_governed(team: Any) -> None:
    store, a, _ = team
    a.put(("teams", "t", "facts"), "f", {"text": "x"})
    stranger = store.as_principal("z")
    with pytest.raises(AccessDeniedError):
        stranger.search(("teams", "t"))
    assert stranger.list_namespaces() == []
    stranger.put(("scratch",), "k", {"text": "ungoverned roots stay open"})


def test_supervisor_example_graph(tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("lg_example", ROOT / "examples" / "langgraph_multi_agent.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "lg_example", module)  # typing.get_type_hints resolves through it
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    from memos_integrations import MemCube

    monkeypatch.setattr(module.MemCube, "init_from_dir", lambda p: MemCube.create(p, embedder=embedder))
    report = module.main(str(tmp_path / "team"))
    assert "offline mode" in report and "week two" in report
    assert "scout's private notes" in report and "writing to the team namespace" in report
