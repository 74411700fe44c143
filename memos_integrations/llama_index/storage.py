"""``storage_context_from_cube``: one call from a cube to a LlamaIndex ``StorageContext``.

Where it sits: the entry point of the LlamaIndex face. Docstore and index store are KV rows, the
vector store and property graph store are items and edges, all in the cube's SQLite, so an index
built on the context is loaded again from the same cube after a restart (``load_index_from_storage``).
Only LlamaIndex's image store and legacy ``SimpleGraphStore`` stay LlamaIndex's in-memory defaults.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.storage.storage_context import StorageContext

from .graph_store import MemOSPropertyGraphStore
from .kvstore import MemOSDocumentStore, MemOSIndexStore
from .vector_store import MemOSVectorStore


def storage_context_from_cube(
    cube: Any, *, namespace: str = "default", user_id: str | None = None, embed_missing: bool = False,
    embed_model: Any = None,
) -> StorageContext:
    """A ``StorageContext`` whose docstore, index store, vector store and property graph store live in ``cube``.

    Args:
        cube: the open cube.
        namespace: keeps several independent contexts apart in one cube.
        user_id: whose context this is: every key (node ids, entity names, documents, index structs)
            is unique per (user, namespace); None is the context of no user.
        embed_missing: embed nodes that carry no embedding with the cube's embedder.
        embed_model: the embed model the indexes will use, checked against the cube's embedder.

    Returns:
        The ``StorageContext``.

    Raises:
        EmbedderMismatchError: ``embed_model`` is not the model the cube was built with.

    Example:
        >>> import tempfile
        >>> from llama_index.core import Document, VectorStoreIndex, load_index_from_storage
        >>> from memos_integrations import MemCube
        >>> from memos_integrations.llama_index import MemOSEmbedding
        >>> path = tempfile.mkdtemp() + "/cube"
        >>> with MemCube.init_from_dir(path) as cube:
        ...     index = VectorStoreIndex.from_documents([Document(text="Miso is Alice's cat.")],
        ...         storage_context=storage_context_from_cube(cube), embed_model=MemOSEmbedding.from_cube(cube))
        >>> with MemCube.init_from_dir(path) as cube:      # later, or in another process
        ...     index = load_index_from_storage(storage_context_from_cube(cube), embed_model=MemOSEmbedding.from_cube(cube))
        ...     index.as_retriever().retrieve("Alice's cat")[0].node.text
        "Miso is Alice's cat."
    """
    return StorageContext.from_defaults(
        docstore=MemOSDocumentStore.from_cube(cube, namespace=f"{namespace}/docstore", user_id=user_id),
        index_store=MemOSIndexStore.from_cube(cube, namespace=f"{namespace}/index_store", user_id=user_id),
        vector_store=MemOSVectorStore(cube, embed_model=embed_model, namespace=namespace, user_id=user_id,
                                      embed_missing=embed_missing),
        property_graph_store=MemOSPropertyGraphStore(cube, namespace=namespace, user_id=user_id),
    )
