"""Tool memory: what recording costs per tool call, and what a failure (which re-distils) costs.

Run::

    .venv/bin/python -m benchmarks.bench_toolmem              # --calls 500 --failures 20

1. **Per call**: the same trivial tool called through LangGraph's plain ``ToolNode`` and through
   ``MemOSToolNode`` (each the one node of a compiled graph) (which records each call in the cube's ``tool_calls`` table), one call per
   ``invoke``, interleaved so both see the same machine load; the difference of the medians is the
   recording overhead. ``ToolMemory.record`` alone (a successful call: one insert, no embedding) is
   timed on its own line.
2. **Per failure**: a failed call re-distils that tool's lessons (``auto_distil``), which writes or
   updates a cube item (an embedding): timed with the real MiniLM embedder.
3. **Surface**: ``ToolMemory.render`` for one tool (what each model call pays for the lessons).

Wall time and process CPU time are printed; on a shared machine the CPU time is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.graph import START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import ToolNode  # noqa: E402

from memos_integrations import MemCube  # noqa: E402
from memos_integrations.langgraph import MemOSToolNode  # noqa: E402
from memos_integrations.toolmem import ToolMemory  # noqa: E402

from .common import pct, table  # noqa: E402


@tool
def echo(text: str) -> str:
    """Return the text."""
    return text


def graph(node: ToolNode) -> Any:
    """A one-node graph (a ToolNode runs inside a graph, which gives it its runtime)."""
    builder = StateGraph(MessagesState)
    builder.add_node("tools", node)
    builder.add_edge(START, "tools")
    return builder.compile()


def _clock(fn: Callable[..., Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--failures", type=int, default=20)
    args = parser.parse_args()

    cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
    memory = ToolMemory(cube)
    plain, recorded = graph(ToolNode([echo])), graph(MemOSToolNode([echo], memory))
    config = {"configurable": {"user_id": "bench", "thread_id": "t"}}

    def state(n: int) -> dict[str, Any]:
        return {"messages": [AIMessage(content="", tool_calls=[
            {"name": "echo", "args": {"text": f"hello {n}"}, "id": f"c{n}", "type": "tool_call"}])]}

    for n in range(20):  # warm both paths (imports, first statements)
        plain.invoke(state(n), config)
        recorded.invoke(state(n), config)
    base: list[tuple[float, float]] = []
    mine: list[tuple[float, float]] = []
    for n in range(args.calls):
        base.append(_clock(lambda n=n: plain.invoke(state(n), config)))
        mine.append(_clock(lambda n=n: recorded.invoke(state(n), config)))
    record = [_clock(lambda: memory.record("bench", "echo", {"text": "hi"}, ok=True, latency_ms=0.1))
              for _ in range(args.calls)]
    fail = [_clock(lambda n=n: memory.record("bench", "lookup", {"order_id": f"#{n}"}, ok=False, error="digits only",
                                         error_class="ValueError")) for n in range(args.failures)]
    assert "avoid calling it with order_id like '#9'" in memory.render("bench", ["lookup"])  # renders a real lesson
    assert len(memory.calls("bench", ["echo"], limit=10**6)) == 20 + args.calls + args.calls  # every call recorded
    render = [_clock(lambda: memory.render("bench", ["lookup"])) for _ in range(100)]

    def row(name: str, samples: list[tuple[float, float]]) -> list[Any]:
        walls, cpus = [s[0] for s in samples], [s[1] for s in samples]
        return [name, len(samples), pct(walls, 50), pct(walls, 95), pct(cpus, 50)]

    rows = [row("ToolNode.invoke (plain)", base), row("MemOSToolNode.invoke (records)", mine),
            row("ToolMemory.record (success)", record), row("failed call: record + re-distil", fail),
            row("ToolMemory.render (1 tool)", render)]
    print(table(["path", "n", "wall p50 ms", "wall p95 ms", "cpu p50 ms"], rows))
    overhead = pct([s[0] for s in mine], 50) - pct([s[0] for s in base], 50)
    cpu_overhead = pct([s[1] for s in mine], 50) - pct([s[1] for s in base], 50)
    print(f"\nrecording overhead per tool call (median difference): {overhead:.3f} ms wall, {cpu_overhead:.3f} ms CPU")
    cube.close()


if __name__ == "__main__":
    main()
