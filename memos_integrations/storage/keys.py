"""API keys for the memory service, kept hashed in the MOS home's registry file (``<home>/mos.db``).

A key is ``mk_<key_id>_<secret>``: ``key_id`` (public, 12 hex characters) finds the row, the secret
(32 random bytes, URL-safe base64) proves possession. Only ``sha256(whole key)`` is stored, and the
check compares digests in constant time, so a copy of ``mos.db`` lets no one call the service.
SHA-256 without a salt or stretching is enough here because the secret is 256 random bits, not a
password a person chose. A key belongs to one user and optionally one agent, and may expire.

The tables (``api_keys`` and ``api_key_audit``, where refused authentications are written) evolve
through :func:`memos_integrations.storage.migrations.migrate` as component ``api_keys``; all their
SQL is in this module, in the portable dialect of :mod:`memos_integrations.storage.sql`.

Example:
    >>> import tempfile, os
    >>> keys = KeyStore.open(os.path.join(tempfile.mkdtemp(), "mos.db"))
    >>> token, info = keys.create("alice")
    >>> keys.verify(token).user_id, keys.verify("mk_nope_x")
    ('alice', None)
    >>> keys.revoke(info.key_id)
    True
    >>> keys.verify(token) is None
    True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..audit_fold import flush_folds
from ..errors import InvalidInputError
from .migrations import migrate
from .sql import Database, SQLiteDatabase

PREFIX = "mk_"

STEPS: dict[str, list[str]] = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS api_keys (key_id TEXT PRIMARY KEY, digest TEXT NOT NULL, user_id TEXT NOT NULL,"
        " agent_id TEXT, label TEXT, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL, last_used_at REAL);"
        "CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id);"
        "CREATE TABLE IF NOT EXISTS api_key_audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,"
        " principal TEXT, action TEXT NOT NULL, target TEXT, allowed INTEGER NOT NULL, detail TEXT NOT NULL)",
    ],
    "postgres": [
        "CREATE TABLE IF NOT EXISTS api_keys (key_id TEXT PRIMARY KEY, digest TEXT NOT NULL, user_id TEXT NOT NULL,"
        " agent_id TEXT, label TEXT, created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION,"
        " revoked_at DOUBLE PRECISION, last_used_at DOUBLE PRECISION);"
        "CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id);"
        "CREATE TABLE IF NOT EXISTS api_key_audit (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " at DOUBLE PRECISION NOT NULL, principal TEXT, action TEXT NOT NULL, target TEXT, allowed INTEGER NOT NULL,"
        " detail TEXT NOT NULL)",
    ],
}

_COLUMNS = "key_id, user_id, agent_id, label, created_at, expires_at, revoked_at, last_used_at"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _when(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).isoformat()


@dataclass(frozen=True)
class KeyInfo:
    """One key's public facts (never its secret)."""

    key_id: str
    user_id: str
    agent_id: str | None
    label: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id, "user_id": self.user_id, "agent_id": self.agent_id, "label": self.label,
            "created_at": _when(self.created_at), "expires_at": _when(self.expires_at),
            "revoked_at": _when(self.revoked_at), "last_used_at": _when(self.last_used_at), "active": self.active(),
        }


class KeyStore:
    """Create, list, revoke and verify API keys over one :class:`Database` (normally ``<home>/mos.db``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db, "api_keys", STEPS)

    @classmethod
    def open(cls, path: str | Path) -> KeyStore:
        """The key store in the SQLite file ``path`` (a MOS home's ``mos.db``, or a home directory)."""
        p = Path(path)
        return cls(SQLiteDatabase(p / "mos.db" if p.is_dir() else p))

    def create(self, user_id: str, *, agent_id: str | None = None, label: str | None = None,
               expires_in: float | None = None) -> tuple[str, KeyInfo]:
        """Make a new key for ``user_id`` (and ``agent_id``); return the key (shown once) and its facts.

        Args:
            user_id: the MOS user the key acts as (the caller checks that the user exists).
            agent_id: the one agent the key acts as; None for a user-wide key.
            label: a note for ``memcube keys list``.
            expires_in: seconds until the key stops working; None for no expiry.

        Returns:
            ``(key, info)``: the key is not stored anywhere, only its digest.

        Raises:
            InvalidInputError: an empty user or agent id, or a non-positive ``expires_in``.
        """
        for name, value in (("user_id", user_id), ("agent_id", agent_id)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidInputError(f"{name} must be a non-empty string")
        if expires_in is not None and not expires_in > 0:
            raise InvalidInputError("expires_in must be a positive number of seconds, or None for no expiry")
        key_id = secrets.token_hex(6)
        token = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        expires = now + expires_in if expires_in is not None else None
        with self.db.transaction() as tx:
            tx.execute(f"INSERT INTO api_keys ({_COLUMNS}, digest) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
                       (key_id, user_id, agent_id, label, now, expires, digest(token)))
            self._audit_tx(tx, "key_create", user_id, key_id, {"agent_id": agent_id, "expires_at": expires}, True)
        return token, KeyInfo(key_id, user_id, agent_id, label, now, expires, None, None)

    def verify(self, token: str | None, *, touch: bool = False) -> KeyInfo | None:
        """The active key behind ``token``, or None (missing, malformed, unknown, revoked or expired)."""
        if not isinstance(token, str) or not token.startswith(PREFIX) or len(token) > 200:
            return None
        key_id = token[len(PREFIX):].split("_", 1)[0]
        row = self.db.read_one(f"SELECT {_COLUMNS}, digest FROM api_keys WHERE key_id = ?", (key_id,))
        # compare digests even when the row is missing, so the timing says nothing about which ids exist
        stored = row[-1] if row is not None else "0" * 64
        if not hmac.compare_digest(stored, digest(token)) or row is None:
            return None
        info = KeyInfo(*row[:-1])
        if not info.active():
            return None
        if touch:
            with self.db.transaction() as tx:
                tx.execute("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (time.time(), key_id))
        return info

    def get(self, key_id: str) -> KeyInfo | None:
        row = self.db.read_one(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,))
        return None if row is None else KeyInfo(*row)

    def list_keys(self, user_id: str | None = None) -> list[KeyInfo]:
        """Every key (or ``user_id``'s), oldest first, revoked and expired ones included."""
        if user_id is None:
            rows = self.db.read(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id")
        else:
            rows = self.db.read(f"SELECT {_COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY created_at, key_id", (user_id,))
        return [KeyInfo(*r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        """Stop a key working now; False if no such key (or it was revoked before)."""
        with self.db.transaction() as tx:
            cur = tx.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (time.time(), key_id))
            done = cur.rowcount > 0
            if done:
                self._audit_tx(tx, "key_revoke", None, key_id, {}, True)
        return done

    def audit(self, action: str, principal: str | None, target: str | None,
              detail: Mapping[str, Any] | None = None, allowed: bool = True) -> None:
        """The service's audit sink (the shape :func:`memos_integrations.access.deny` writes to)."""
        with self.db.transaction() as tx:
            self._audit_tx(tx, action, principal, target, dict(detail or {}), allowed)

    def audit_log(self, limit: int = 100, principal: str | None = None) -> list[dict[str, Any]]:
        """Newest first: key changes, refused authentications and refused impersonations."""
        sql = "SELECT seq, at, principal, action, target, allowed, detail FROM api_key_audit"
        params: tuple[Any, ...] = ()
        if principal is not None:
            sql += " WHERE principal = ?"
            params = (principal,)
        rows = self.db.read(sql + " ORDER BY seq DESC LIMIT ?", (*params, limit))
        return [{"seq": r[0], "at": _when(r[1]), "principal": r[2], "action": r[3], "target": r[4],
                 "allowed": bool(r[5]), "detail": json.loads(r[6])} for r in rows]

    def close(self) -> None:
        try:
            flush_folds(self)  # refusals counted but not yet written (audit_fold) reach the log first
        finally:
            self.db.close()

    @staticmethod
    def _audit_tx(tx: Any, action: str, principal: str | None, target: str | None, detail: Mapping[str, Any],
                  allowed: bool) -> None:
        tx.execute("INSERT INTO api_key_audit (at, principal, action, target, allowed, detail) VALUES (?, ?, ?, ?, ?, ?)",
                   (time.time(), principal, action, target, int(allowed), json.dumps(dict(detail), default=str)))
