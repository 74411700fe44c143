"""The stress suite runs only when asked: ``MEMOS_STRESS=1 python -m pytest tests/stress`` (``make stress``).

A plain ``pytest`` collects nothing here: the run takes minutes and kills processes on purpose.
MEMOS_STRESS_SECONDS sets the length (default 240).
"""

from __future__ import annotations

import os

from tests.integration.conftest import chroma_server  # noqa: F401 - the real `chroma run` fixture

if os.environ.get("MEMOS_STRESS") != "1":
    collect_ignore_glob = ["test_*.py"]
