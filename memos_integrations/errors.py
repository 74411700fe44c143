"""Errors raised by memos-integrations.

Every error derives from :class:`MemosError`, and where a caller would naturally catch a builtin
(``ValueError`` for bad input, ``PermissionError`` for access, ``FileNotFoundError`` for a missing cube)
the subclass derives from that builtin too. Each message says what to do instead.
"""

from __future__ import annotations


class MemosError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidInputError(MemosError, ValueError):
    """An argument has the right type but a value that cannot be used."""


class EmptyTextError(InvalidInputError):
    """A memory, message or query has no text once whitespace is stripped."""


class OversizedInputError(InvalidInputError):
    """A text is longer than the cube accepts (``CubeConfig.max_text_chars``)."""


class InvalidFilterError(InvalidInputError):
    """A search or listing filter names an unknown field or operator, or a value of the wrong type."""


class InvalidTypeError(MemosError, TypeError):
    """An argument has the wrong type."""


class CubeNotFoundError(MemosError, FileNotFoundError):
    """No cube at the given directory, or no cube with the given id in the registry."""


class CubeCorruptedError(MemosError, RuntimeError):
    """A cube's files cannot be read as a cube (bad cube.json, unreadable database, damaged cache file)."""


class EmbedderMismatchError(MemosError, ValueError):
    """The embedder given to a cube is not the one the cube's vectors were built with."""


class ModelMismatchError(MemosError, ValueError):
    """A KV cache or adapter was made for another base model, dtype or tokenizer."""


class UnknownUserError(MemosError, LookupError):
    """A user id that the orchestrator does not know."""


class ItemNotFoundError(MemosError, LookupError):
    """A memory id that is not in the cube (or has been deleted)."""


class AccessDeniedError(MemosError, PermissionError):
    """A principal tried to read or write a cube it neither owns nor was shared."""


class ConflictError(MemosError, RuntimeError):
    """A concurrent writer changed the memory first (the version you read is no longer the latest).

    Retryable: read the item again and re-apply your change.
    """


class CubeLockedError(MemosError, RuntimeError):
    """Another process holds a lock on the cube that this operation needs; retry, or use a server backend."""


class StorageUnavailableError(MemosError, ConnectionError):
    """The database server cannot be reached or dropped the connection; the message says whether the
    write was rolled back (retry it) or its outcome is unknown (read it back first)."""


class StorageBusyError(StorageUnavailableError, TimeoutError):
    """Every pooled connection stayed busy past the pool timeout; raise the pool size or the timeout."""


class MissingExtraError(MemosError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class BackendError(MemosError, RuntimeError):
    """A storage backend (Chroma server, Neo4j) failed or is unreachable."""


class GraphUnavailableError(BackendError, ConnectionError):
    """The graph server (Neo4j, FalkorDB) does not answer; the cube's truth is unaffected and the graph
    writes stay queued: start the server, then retry (``cube.reconcile()``)."""


class CypherNotAllowedError(InvalidInputError):
    """A query given to the read-only ``cypher()`` would write or administer the graph."""


class ReaderError(MemosError, RuntimeError):
    """The LLM reader could not read a window (endpoint down, slow, rate-limited, or unreadable output).

    The raw messages are stored either way; the window stays queued with this error (``cube.pending()``).
    """


class BudgetExceededError(ReaderError):
    """A token budget (per user or per cube) is spent; raise it in the reader config, or add in fast mode."""


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"{module!r} is not installed; install it with: pip install 'memos-integrations[{extra}]'"
        ) from exc


class ModelLoadError(MemosError, ValueError):
    """A checkpoint cannot be loaded: not a model, a GGUF file this gguf/transformers cannot read, or offline."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """A model path (folder or ``.gguf`` file) that does not exist."""
