"""The Chroma adapter: a :class:`~memos_integrations.storage.base.VectorIndex` on a Chroma collection.

The store is the source of truth and keeps every item's vector; this index exists for approximate
nearest-neighbour search when a filter leaves too many candidates to score exactly. It can be
rebuilt from the store at any time (``MemCube.reindex``), so nothing is lost if it is deleted.
The engine hands it :class:`~memos_integrations.storage.base.IndexRow` rows and a neutral
:class:`~memos_integrations.storage.base.VectorFilter`; Chroma's ``where`` syntax is written only here.

Chroma is always given our vectors; it never sees an embedding function of its own (its default
one downloads a model and fails offline).

Every Chroma call that fails raises :class:`BackendError` naming the operation, the collection, the
cause's type and what to do; the cube turns a failed index write after a commit into a queued retry
and a failed query into an exact search over the store, so a broken index never loses or hides a memory.

The embedded (persistent) client keeps its HNSW index in the memory of one process, so a persistent
index must be written by one process only: ``MemCube`` holds a lock on the cube for that (see
:mod:`memos_integrations.cubelock`). A Chroma server may be shared by several processes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError, CubeCorruptedError, MemosError, MissingExtraError
from .base import IndexRow, VectorFilter


def _chromadb() -> Any:
    try:
        import chromadb
    except ImportError as exc:  # pragma: no cover
        raise MissingExtraError("chromadb is not installed: pip install memos-integrations") from exc
    return chromadb


class ChromaIndex:
    """A Chroma collection in cosine space; pass a client, or use :meth:`persistent` / :meth:`http`.

    Example:
        >>> import tempfile, numpy as np
        >>> index = ChromaIndex.persistent(tempfile.mkdtemp(), "demo")
        >>> index.upsert([IndexRow("a", user_id="u")], np.eye(1, 4, dtype="float32"))
        >>> index.query(np.eye(1, 4, dtype="float32")[0], 1, VectorFilter(user_id=("u",)))
        [('a', 1.0)]
        >>> index.query(np.eye(1, 4, dtype="float32")[0], 1, VectorFilter(user_id=("v",)))
        []
    """

    def __init__(self, client: Any, collection: str) -> None:
        self.client = client
        self.name = collection
        try:
            self.collection = client.get_or_create_collection(
                collection, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
            )
        except Exception as exc:  # chromadb raises many types; one message that says where
            raise BackendError(
                f"cannot open Chroma collection {collection!r} ({type(exc).__name__}: {exc}); if the index lives on "
                "a Chroma server, check that it is running and reachable; the memories are safe in memory.db"
            ) from exc

    @classmethod
    def persistent(cls, path: str | Path, collection: str) -> ChromaIndex:
        chromadb = _chromadb()
        from chromadb.config import Settings

        try:
            # resolved: chromadb caches one client per path *string*, so "./x" from two working
            # directories would share (and corrupt) one client
            client = chromadb.PersistentClient(path=str(Path(path).resolve()), settings=Settings(anonymized_telemetry=False))
            return cls(client, collection)
        except Exception as exc:  # a damaged index is rebuildable: say how
            raise CubeCorruptedError(
                f"the vector index at {path} cannot be read ({exc}); it is derived from memory.db: "
                f"delete {path} and open the cube again to rebuild it"
            ) from exc

    @classmethod
    def http(cls, host: str, port: int, collection: str, ssl: bool = False) -> ChromaIndex:
        chromadb = _chromadb()
        from chromadb.config import Settings

        try:
            client = chromadb.HttpClient(host=host, port=port, ssl=ssl, settings=Settings(anonymized_telemetry=False))
            client.heartbeat()
        except Exception as exc:
            raise BackendError(
                f"no Chroma server answers at {host}:{port} ({exc}); start one with `chroma run --port {port}`"
            ) from exc
        return cls(client, collection)

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """Chroma raises many exception types; the caller gets one, saying what failed and what to do."""
        try:
            yield
        except MemosError:
            raise
        except Exception as exc:
            raise BackendError(
                f"Chroma {what} on collection {self.name!r} failed ({type(exc).__name__}: {exc}); the memories are "
                "safe in memory.db: retry, or run MemCube.reconcile() (or MemCube.reindex() to rebuild the index); "
                "if the index lives on a Chroma server, check that it is running"
            ) from exc

    #: set by the cube's own opener (:func:`open_chroma_index`): closing the cube then closes the client,
    #: so a cube made again at a deleted cube's path, in the same process, gets an index of its own
    #: (chromadb keeps one client per folder per process, counting references). An index a caller made
    #: and passed in with ``index=`` stays the caller's to close.
    owns_client = False

    def close(self) -> None:
        """Release the embedded client if the cube's opener made it (see :attr:`owns_client`)."""
        if self.owns_client:
            self.owns_client = False
            self.client.close()

    def upsert(self, rows: Sequence[IndexRow], vectors: np.ndarray) -> None:
        if not rows:
            return
        ids = [r.id for r in rows]
        # Chroma rejects None values in metadata; absent keys simply do not match a where
        metadatas = [{f: v for f in VectorFilter.FIELDS if (v := getattr(r, f)) is not None} or {"_": 0} for r in rows]
        step = 5000  # below Chroma's maximum batch size
        with self._calling(f"upsert of {len(ids)} vectors"):
            for start in range(0, len(ids), step):
                self.collection.upsert(
                    ids=ids[start : start + step],
                    embeddings=np.asarray(vectors[start : start + step], dtype=np.float32),
                    metadatas=metadatas[start : start + step],  # type: ignore[arg-type]
                )

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            with self._calling(f"delete of {len(ids)} vectors"):
                for start in range(0, len(ids), 5000):
                    self.collection.delete(ids=list(ids[start : start + 5000]))

    def query(self, vector: np.ndarray, k: int, where: VectorFilter | None = None) -> list[tuple[str, float]]:
        """The ``k`` nearest ids with their cosine similarity (1 - distance), best first, within ``where``."""
        if k <= 0:
            return []
        with self._calling(f"query (k={k})"):
            result = self.collection.query(
                query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=k, where=_where(where),
                include=["distances"],
            )
        ids = result["ids"][0]
        distances = result["distances"][0] if result.get("distances") else [0.0] * len(ids)
        return [(i, 1.0 - float(d)) for i, d in zip(ids, distances)]

    def ids(self) -> set[str]:
        out: set[str] = set()
        offset, step = 0, 10_000
        while True:
            with self._calling("listing of ids"):
                page = self.collection.get(include=[], limit=step, offset=offset)["ids"]
            out.update(page)
            if len(page) < step:
                return out
            offset += step

    def count(self) -> int:
        with self._calling("count"):
            return int(self.collection.count())

    def reset(self) -> None:
        with self._calling("reset"):
            self.client.delete_collection(self.name)
            self.collection = self.client.get_or_create_collection(
                self.name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
            )


def _where(flt: VectorFilter | None) -> dict[str, Any] | None:
    """A :class:`VectorFilter` in Chroma's ``where`` syntax (None: no condition)."""
    parts: list[dict[str, Any]] = [{name: {"$in": list(values)}} for name, values in (flt.conditions() if flt else [])]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def collection_name(raw: str) -> str:
    """A Chroma collection name for ``raw`` (a cube id or a configured name).

    The historical derivation is kept whenever Chroma accepts it, so existing cubes find their
    collection; any other folder name (``notes_``, ``café``, ``x``) gets an ASCII prefix plus a
    hash of the full name, which is valid and distinct per name.
    """
    legacy = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in raw)[:60]
    if len(legacy) < 3:
        legacy = f"cube_{legacy}".ljust(3, "_")
    if _CHROMA_NAME.match(legacy) and ".." not in legacy and not _IPV4.match(legacy):
        return legacy
    prefix = re.sub(r"[^A-Za-z0-9]+", "_", raw.encode("ascii", "ignore").decode()).strip("_")[:40]
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"cube_{prefix}_{digest}" if prefix else f"cube_{digest}"


_CHROMA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
_IPV4 = re.compile(r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$")


def open_chroma_index(config: Any, cube_path: Path, *, cube_id: str, store: Any = None) -> ChromaIndex:
    """The registry's ``vector.chroma`` factory: ``<cube>/vectors``, or a collection on a Chroma server."""
    name = collection_name(config.collection or f"cube_{cube_id}")
    if config.mode == "http":
        return ChromaIndex.http(config.host, config.port, name, config.ssl)
    index = ChromaIndex.persistent(Path(cube_path) / "vectors", name)
    index.owns_client = True
    return index
