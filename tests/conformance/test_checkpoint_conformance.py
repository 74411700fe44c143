"""langgraph-checkpoint-conformance against MemOSSaver, at the FULL level (extended capabilities too).

The published suite is a runner (``validate``) over a registered async factory; each capability gets a
fresh saver over a fresh cube. The test fails unless every capability, base and extended, is detected
and passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.conformance")

from langgraph.checkpoint.conformance import checkpointer_test, validate  # noqa: E402
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES  # noqa: E402


async def test_memos_saver_passes_full_conformance(tmp_path: Path, embedder: Any) -> None:
    from memos_integrations import MemCube
    from memos_integrations.langgraph import MemOSSaver

    counter = iter(range(100))

    @checkpointer_test(name="MemOSSaver")
    async def memos_saver() -> AsyncIterator[MemOSSaver]:
        cube = MemCube.init_from_dir(tmp_path / f"cube{next(counter)}", embedder=embedder)
        try:
            yield MemOSSaver(cube)
        finally:
            cube.close()

    report = await validate(memos_saver)
    failures = {cap: r.failures for cap, r in report.results.items() if r.passed is not True}
    assert not failures, failures
    assert {c.value for c in ALL_CAPABILITIES} == {cap for cap, r in report.results.items() if r.detected}
    assert report.conformance_level() == "FULL"
