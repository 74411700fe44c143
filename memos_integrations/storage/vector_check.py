"""What a vector must be to enter a store: one finite row of real numbers of the store's dimension.

:meth:`~.sqlstore.SQLStore.encode_vector` calls :func:`checked_vector` for every vector it writes (``write_items``
and ``put_vectors``, on SQLite and PostgreSQL alike), so a malformed one is refused before it is stored. Without
it ``put_vectors`` stored ``None`` as one NaN float, and every later search crashed reshaping the column.

The store's dimension is that of the vectors it holds (the cube's embedder pins it in cube.json; the store
does not know the embedder). A process remembers it as a hint, so a vector of the right size costs no query; a
vector of another size re-reads a stored one (inside the caller's transaction, so it sees that
transaction's rows) before it is refused. An empty store takes the first vector's size; on PostgreSQL a batch
is encoded before its rows are sent, so the hint of the same transaction is what refuses a mixed batch there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InvalidInputError


class InvalidVectorError(InvalidInputError):
    """A vector that is not one finite row of real numbers of the store's dimension."""


_FIX = "pass one 1-D array of finite floats per item, as the cube's embedder makes (embedder.embed_documents)"


def _refuse(why: str) -> InvalidVectorError:
    return InvalidVectorError(f"refused vector: {why}; nothing was written: {_FIX}")


def checked_vector(store: Any, vector: Any) -> np.ndarray:
    """``vector`` as float32 when it is one finite row of the store's dimension, else :class:`InvalidVectorError`."""
    try:
        given = np.asarray(vector)
    except (ValueError, TypeError) as exc:  # a ragged list
        raise _refuse(f"not an array of numbers ({exc})") from exc
    if given.dtype.kind not in "fiu":
        raise _refuse(f"dtype {given.dtype} holds no real numbers (a {type(vector).__name__})")
    if given.ndim != 1 or given.shape[0] == 0:
        raise _refuse(f"shape {given.shape}, not one non-empty row")
    with np.errstate(over="ignore"):
        row = given.astype(np.float32)
    if not np.isfinite(row).all():
        raise _refuse("it holds NaN or infinity (or a value beyond float32)")
    _check_dim(store, row.shape[0])
    return row


def _check_dim(store: Any, dim: int) -> None:
    hint: tuple[int, Any] | None = getattr(store, "_vector_dim", None)
    if hint is not None and hint[0] == dim:
        return
    tx = getattr(store.db, "current_transaction", lambda: None)()  # PostgreSQL's; None on SQLite (reads see the tx)
    stored = store.db.scalar("SELECT length(vector) FROM vectors LIMIT 1")
    if stored is not None:
        have = int(stored) // 4  # float32 bytes
        store._vector_dim = (have, None)
        if have != dim:
            raise _refuse(f"{dim} dimensions, but this store's vectors have {have} (the cube's embedder's dimension)")
        return
    if hint is not None and tx is not None and hint[1] is tx:  # the same batch, not sent yet
        raise _refuse(f"{dim} dimensions, but the batch's first vector has {hint[0]}")
    store._vector_dim = (dim, tx)
