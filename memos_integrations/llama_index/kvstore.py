"""LlamaIndex key-value storage in the cube's SQLite (the ``kv`` table): KV store, docstore, index store.

Where it sits: LlamaIndex's ``KVDocumentStore`` and ``KVIndexStore`` keep documents, ref-doc info,
hashes and index structs as JSON rows in a ``BaseKVStore``; :class:`MemOSKVStore` is that base on the
cube's ``kv`` rows, so they share the cube's file, WAL and transactions. Collections are prefixed with
``llama_index/`` so the other faces' rows never collide with these, and a store bound to a user keeps
its rows under ``llama_index@<user>/`` (the user id URL-quoted): keys are unique per (user, collection).
A store with no user reads and writes the unscoped collections earlier versions wrote.

On a :class:`~memos_integrations.remote.RemoteCube` each operation goes to the service
(:mod:`memos_integrations.remote_store`), which runs this class there as the API key's user: the rows
are that user's (``llama_index@<user>/``), a store with no user included.

Who is acting: the ``user_id`` binding, else the user a LangGraph run's context names. Sync/async:
every ``a*`` method runs the sync work in a worker thread.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from llama_index.core.storage.docstore.keyval_docstore import KVDocumentStore
from llama_index.core.storage.index_store.keyval_index_store import KVIndexStore
from llama_index.core.storage.kvstore.types import DEFAULT_BATCH_SIZE, DEFAULT_COLLECTION, BaseKVStore

from ..aio import in_thread
from ..errors import InvalidTypeError
from ..face_api import CubeAPI, as_cube
from ._nodes import acting_user

PREFIX = "llama_index/"


def collection_prefix(user_id: str | None) -> str:
    """Where one user's LlamaIndex KV rows live (the unscoped prefix for no user, as before)."""
    return PREFIX if user_id is None else f"llama_index@{quote(user_id, safe='')}/"


class MemOSKVStore(BaseKVStore):
    """A ``BaseKVStore`` on the cube's ``kv`` rows (JSON values; ``put_all`` is one transaction).

    Example:
        >>> import tempfile
        >>> from memos_integrations import MemCube
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> kv = MemOSKVStore.from_cube(cube)
        >>> kv.put("k", {"a": 1}); kv.get("k")
        {'a': 1}
        >>> MemOSKVStore.from_cube(cube, user_id="bob").get("k") is None
        True
        >>> cube.close()
    """

    def __init__(self, cube: Any, user_id: str | None = None) -> None:
        from ..remote_store import RemoteKV, remote_of

        self._cube: CubeAPI = as_cube(cube, "MemOSKVStore")
        self.user_id = user_id
        remote = remote_of(self._cube)
        self._remote = None if remote is None else RemoteKV(remote)

    @classmethod
    def from_cube(cls, cube: Any, user_id: str | None = None) -> MemOSKVStore:
        """The KV rows of ``user_id`` (None: the unscoped rows) in ``cube``."""
        return cls(cube, user_id=user_id)

    @property
    def _store(self) -> Any:
        return self._cube.store

    def _user(self) -> str | None:
        return acting_user(self.user_id, self._cube, "MemOSKVStore")

    def _collection(self, collection: str) -> str:
        return collection_prefix(self._user()) + collection

    @staticmethod
    def _check(key: Any, val: Any = None, check_val: bool = False) -> None:
        if not isinstance(key, str):
            raise InvalidTypeError(f"keys are strings, got {type(key).__name__}")
        if check_val and not isinstance(val, dict):
            raise InvalidTypeError(f"values are dicts, got {type(val).__name__}")

    def put(self, key: str, val: dict, collection: str = DEFAULT_COLLECTION) -> None:
        self.put_all([(key, val)], collection)

    def put_all(
        self, kv_pairs: list[tuple[str, dict]], collection: str = DEFAULT_COLLECTION, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        # every batch size is accepted: all pairs go into one transaction (all or nothing)
        for key, val in kv_pairs:
            self._check(key, val, check_val=True)
        if kv_pairs and self._remote is not None:
            self._remote.put_all(self._user(), collection, kv_pairs)
        elif kv_pairs:
            self._store.kv_put(self._collection(collection), dict(kv_pairs))

    def get(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict | None:
        self._check(key)
        if self._remote is not None:
            return self._remote.get(self._user(), collection, key)
        value: dict | None = self._store.kv_get(self._collection(collection), [key]).get(key)
        return value

    def get_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict]:
        if self._remote is not None:
            return self._remote.get_all(self._user(), collection)
        rows: dict[str, dict] = self._store.kv_all(self._collection(collection))
        return rows

    def delete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        self._check(key)
        if self._remote is not None:
            return self._remote.delete(self._user(), collection, key)
        return bool(self._store.kv_delete(self._collection(collection), [key]))

    async def aput(self, key: str, val: dict, collection: str = DEFAULT_COLLECTION) -> None:
        await in_thread(self.put, key, val, collection)

    async def aput_all(
        self, kv_pairs: list[tuple[str, dict]], collection: str = DEFAULT_COLLECTION, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        await in_thread(self.put_all, kv_pairs, collection, batch_size)

    async def aget(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict | None:
        return await in_thread(self.get, key, collection)

    async def aget_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict]:
        return await in_thread(self.get_all, collection)

    async def adelete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        return await in_thread(self.delete, key, collection)


class MemOSDocumentStore(KVDocumentStore):
    """LlamaIndex's ``KVDocumentStore`` (documents, ref-doc info, hashes) persisted in a cube.

    Example:
        >>> import tempfile
        >>> from llama_index.core import Document
        >>> from memos_integrations import MemCube
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> docstore = MemOSDocumentStore.from_cube(cube)
        >>> docstore.add_documents([Document(text="hello", id_="d1")])
        >>> MemOSDocumentStore.from_cube(cube).get_document("d1").text
        'hello'
        >>> cube.close()
    """

    @classmethod
    def from_cube(cls, cube: Any, namespace: str = "docstore", batch_size: int = 100,
                  user_id: str | None = None) -> MemOSDocumentStore:
        """The docstore ``namespace`` of ``user_id`` (None: the unscoped one)."""
        return cls(MemOSKVStore(cube, user_id=user_id), namespace=namespace, batch_size=batch_size)


class MemOSIndexStore(KVIndexStore):
    """LlamaIndex's ``KVIndexStore`` (index structs) persisted in a cube."""

    @classmethod
    def from_cube(cls, cube: Any, namespace: str = "index_store", user_id: str | None = None) -> MemOSIndexStore:
        """The index store ``namespace`` of ``user_id`` (None: the unscoped one)."""
        return cls(MemOSKVStore(cube, user_id=user_id), namespace=namespace)
