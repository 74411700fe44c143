"""Errors specific to the LangGraph face (they extend the package's :class:`MemosError` tree).

The face otherwise raises the core errors (``InvalidInputError``, ``AccessDeniedError``,
``ItemNotFoundError``) so callers catch one family whatever face they use.
"""

from __future__ import annotations

from ..errors import CubeCorruptedError, ItemNotFoundError


class ThreadNotFoundError(ItemNotFoundError):
    """A LangGraph thread id with no checkpoint in the cube (copy or read of a thread that does not exist)."""


class CheckpointSerdeError(CubeCorruptedError):
    """A stored checkpoint or write uses a serialisation type this saver's serializer cannot read.

    Typical causes: it was written by an ``EncryptedSerializer`` and read without one (or with another
    key), or by a pickle-enabled serializer, which this package never loads.
    """
