"""Docstore, index store and KV store in a cube, mirroring what SimpleDocumentStore guarantees.

Each behaviour runs on LlamaIndex's ``SimpleDocumentStore`` / ``SimpleIndexStore`` and on ours, and
must give the same answers; ours must also give them again after the cube is closed and reopened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document  # noqa: E402
from llama_index.core.data_structs import IndexDict, IndexList  # noqa: E402
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.storage.docstore import SimpleDocumentStore  # noqa: E402
from llama_index.core.storage.index_store import SimpleIndexStore  # noqa: E402

from memos_integrations import MemCube  # noqa: E402
from memos_integrations.errors import InvalidTypeError  # noqa: E402
from memos_integrations.llama_index import MemOSDocumentStore, MemOSIndexStore, MemOSKVStore  # noqa: E402


def nodes_of(doc_id: str, n: int) -> list[TextNode]:
    out = []
    for i in range(n):
        node = TextNode(id_=f"{doc_id}-{i}", text=f"chunk {i} of {doc_id}", metadata={"i": i})
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc_id)
        out.append(node)
    return out


def exercise_docstore(ds: Any) -> list[Any]:
    """A script of docstore operations; returns everything observable, to compare stores."""
    seen: list[Any] = []
    doc = Document(text="the whole doc", id_="d1", metadata={"k": "v"})
    ds.add_documents([doc, *nodes_of("d1", 3), *nodes_of("d2", 2)])
    seen.append(sorted(ds.docs))
    seen.append(ds.get_document("d1").text)
    seen.append([n.node_id for n in ds.get_nodes(["d1-0", "d2-1"])])
    seen.append(ds.get_node("d1-2").metadata)
    seen.append((ds.document_exists("d1"), ds.document_exists("nope")))
    seen.append(ds.get_document("nope", raise_error=False))
    with pytest.raises(ValueError):
        ds.get_document("nope")
    info = ds.get_ref_doc_info("d1")
    seen.append(sorted(info.node_ids))
    seen.append(sorted((k, sorted(v.node_ids)) for k, v in (ds.get_all_ref_doc_info() or {}).items()))
    seen.append(ds.get_document_hash("d1") == doc.hash)
    ds.set_document_hash("extra", "h1")
    seen.append(sorted(ds.get_all_document_hashes().items()))
    seen.append(ds.get_node_dict({0: "d1-0"})[0].node_id)
    with pytest.raises(ValueError):
        ds.add_documents([doc], allow_update=False)
    ds.delete_document("d1-0")
    seen.append(sorted(ds.get_ref_doc_info("d1").node_ids))
    ds.delete_ref_doc("d2")
    seen.append((ds.document_exists("d2-0"), ds.get_ref_doc_info("d2")))
    seen.append(ds.delete_document("nope", raise_error=False))
    with pytest.raises(ValueError):
        ds.delete_document("nope")
    updated = Document(text="changed", id_="d1")
    ds.add_documents([updated])
    seen.append((ds.get_document("d1").text, ds.get_document_hash("d1") == updated.hash))
    seen.append(sorted(ds.docs))
    return seen


def test_docstore_matches_simple(cube: Any) -> None:
    assert exercise_docstore(MemOSDocumentStore.from_cube(cube)) == exercise_docstore(SimpleDocumentStore())


def test_docstore_survives_reopening(tmp_path: Path, embedder: Any) -> None:
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder) as cube:
        exercise_docstore(MemOSDocumentStore.from_cube(cube))
        before = MemOSDocumentStore.from_cube(cube)
        expected = (sorted(before.docs), sorted(before.get_ref_doc_info("d1").node_ids),
                    sorted(before.get_all_document_hashes().items()))
    with MemCube.init_from_dir(tmp_path / "c", embedder=embedder) as cube:
        after = MemOSDocumentStore.from_cube(cube)
        assert (sorted(after.docs), sorted(after.get_ref_doc_info("d1").node_ids),
                sorted(after.get_all_document_hashes().items())) == expected


async def test_docstore_async_matches_sync(cube: Any) -> None:
    ds = MemOSDocumentStore.from_cube(cube)
    await ds.async_add_documents(nodes_of("d3", 2))
    assert (await ds.aget_document("d3-1")).text == "chunk 1 of d3"
    assert sorted((await ds.aget_ref_doc_info("d3")).node_ids) == ["d3-0", "d3-1"]
    await ds.adelete_ref_doc("d3")
    assert not await ds.adocument_exists("d3-0")


def exercise_index_store(store: Any) -> list[Any]:
    seen: list[Any] = []
    a, b = IndexDict(index_id="a"), IndexList(index_id="b", nodes=["n1", "n2"])
    a.add_node(TextNode(id_="n1", text="x"), text_id="n1")
    store.add_index_struct(a)
    seen.append(store.get_index_struct().index_id)  # the only one: no id needed
    store.add_index_struct(b)
    seen.append(sorted(s.index_id for s in store.index_structs()))
    seen.append(store.get_index_struct("b").nodes)
    seen.append(store.get_index_struct("a").nodes_dict)
    with pytest.raises(AssertionError):  # LlamaIndex asserts there is exactly one
        store.get_index_struct()
    store.delete_index_struct("a")
    seen.append([s.index_id for s in store.index_structs()])
    seen.append(store.get_index_struct("a"))
    return seen


def test_index_store_matches_simple(cube: Any) -> None:
    assert exercise_index_store(MemOSIndexStore.from_cube(cube)) == exercise_index_store(SimpleIndexStore())


def test_kv_store_collections_and_atomic_put_all(cube: Any) -> None:
    kv = MemOSKVStore.from_cube(cube)
    kv.put_all([("a", {"x": 1}), ("b", {"y": [1, 2]})], collection="c1", batch_size=7)
    kv.put("a", {"z": None}, collection="c2")
    assert kv.get_all("c1") == {"a": {"x": 1}, "b": {"y": [1, 2]}} and kv.get("a", "c2") == {"z": None}
    assert kv.delete("a", "c1") and not kv.delete("a", "c1") and kv.get("a", "c1") is None
    with pytest.raises(InvalidTypeError):
        kv.put_all([("ok", {"v": 1}), ("bad", "not a dict")], collection="c3")  # type: ignore[list-item]
    assert kv.get_all("c3") == {}  # nothing half-written
    with pytest.raises(TypeError):  # not JSON: the one transaction rolls back
        kv.put_all([("ok", {"v": 1}), ("bad", {"v": object()})], collection="c3")
    assert kv.get_all("c3") == {}
    # rows live under a llama_index/ prefix: other faces' kv rows never collide with them
    assert cube.store.kv_all("llama_index/c2") == {"a": {"z": None}}


async def test_kv_store_async(cube: Any) -> None:
    kv = MemOSKVStore.from_cube(cube)
    await kv.aput("k", {"v": 1})
    await kv.aput_all([("j", {"v": 2})])
    assert await kv.aget("k") == {"v": 1} and set(await kv.aget_all()) == {"k", "j"}
    assert await kv.adelete("k")


def test_namespaced_contexts_do_not_share(cube: Any) -> None:
    from memos_integrations.llama_index import storage_context_from_cube

    a, b = storage_context_from_cube(cube, namespace="a"), storage_context_from_cube(cube, namespace="b")
    a.docstore.add_documents(nodes_of("d", 1))
    assert a.docstore.document_exists("d-0") and not b.docstore.document_exists("d-0")

