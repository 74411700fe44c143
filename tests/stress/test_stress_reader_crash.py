"""Kill -9 during async extraction at twelve random moments (seeds 1-12): the integration suite's
check (tests/integration/test_reader_crash.py, which runs seed 1), ~4 s each on a quiet machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_reader_crash import kill_9_during_async_extraction


@pytest.mark.parametrize("seed", range(1, 13))
def test_kill_9_during_async_extraction_at_many_moments(tmp_path: Path, embedder: Any, seed: int) -> None:
    kill_9_during_async_extraction(tmp_path, embedder, seed)
