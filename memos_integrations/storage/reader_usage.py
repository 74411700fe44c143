"""Token and cost ledger of the LLM reader, per scope (``cube`` and ``user:<id>``), in the cube's database.

Budgets are checked against it before a window is read, and each read adds to it in the same
transaction that applies the read's decision (so a crash neither loses nor double-counts usage of an
applied window; a read that crashed before applying is counted when it is read again).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from .migrations import migrate
from .sql import Database

COMPONENT = "reader_usage"

MIGRATIONS: dict[str, list[str]] = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS reader_usage (scope TEXT PRIMARY KEY, prompt_tokens INTEGER NOT NULL DEFAULT 0, "
        "completion_tokens INTEGER NOT NULL DEFAULT 0, calls INTEGER NOT NULL DEFAULT 0, seconds REAL NOT NULL DEFAULT 0, "
        "cost REAL NOT NULL DEFAULT 0, updated_at REAL NOT NULL)",
    ],
    "postgres": [
        "CREATE TABLE IF NOT EXISTS reader_usage (scope TEXT PRIMARY KEY, prompt_tokens BIGINT NOT NULL DEFAULT 0, "
        "completion_tokens BIGINT NOT NULL DEFAULT 0, calls BIGINT NOT NULL DEFAULT 0, "
        "seconds DOUBLE PRECISION NOT NULL DEFAULT 0, cost DOUBLE PRECISION NOT NULL DEFAULT 0, "
        "updated_at DOUBLE PRECISION NOT NULL)",
    ],
}


class UsageLedger:
    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db, COMPONENT, MIGRATIONS)

    def add(self, scopes: Sequence[str], prompt: int, completion: int, calls: int, seconds: float, cost: float) -> None:
        """Add one read's usage to each scope (joins the caller's transaction)."""
        now = time.time()
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO reader_usage (scope, prompt_tokens, completion_tokens, calls, seconds, cost, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope) DO UPDATE SET "
                "prompt_tokens = reader_usage.prompt_tokens + excluded.prompt_tokens, "
                "completion_tokens = reader_usage.completion_tokens + excluded.completion_tokens, "
                "calls = reader_usage.calls + excluded.calls, seconds = reader_usage.seconds + excluded.seconds, "
                "cost = reader_usage.cost + excluded.cost, updated_at = excluded.updated_at",
                [(s, prompt, completion, calls, seconds, cost, now) for s in scopes])

    def tokens(self, scope: str) -> int:
        row = self.db.read_one("SELECT prompt_tokens + completion_tokens FROM reader_usage WHERE scope = ?", (scope,))
        return int(row[0]) if row else 0

    def totals(self, scope: str) -> dict[str, float]:
        row = self.db.read_one(
            "SELECT prompt_tokens, completion_tokens, calls, seconds, cost FROM reader_usage WHERE scope = ?", (scope,))
        keys = ("prompt_tokens", "completion_tokens", "calls", "seconds", "cost")
        return dict(zip(keys, row)) if row else dict.fromkeys(keys, 0)
