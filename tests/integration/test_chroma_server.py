"""The same cube API with vectors on a real Chroma server (`chroma run` on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memos_integrations import MemCube
from memos_integrations.config import chroma_server as server_config
from memos_integrations.errors import BackendError, MemosError
from memos_integrations.items import MemoryItem
from memos_integrations.storage.base import IndexRow
from tests.integration.conftest import free_port


def test_cube_on_a_chroma_server(chroma_server, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    host, port = chroma_server
    config = server_config(host, port, cube_id="served")
    with MemCube.init_from_dir(tmp_path / "served", config, embedder=embedder) as cube:
        assert not (cube.path / "vectors").exists(), "no local vector directory when a server holds them"
        assert cube.stats()["vector_backend"] == "http"
        keep, gone = cube.add(memory=["Hana grows tomatoes on her balcony.", "Hana's bike is red."], user_id="hana")
        assert cube.search("vegetable garden", user_id="hana", top_k=1)[0].item.id == keep.id
        cube.delete(gone.id)
        assert cube.index.ids() == {keep.id}
    # reopen: the config in cube.json points at the same server and collection
    with MemCube.open(tmp_path / "served", embedder=embedder) as cube:
        assert cube.index.count() == 1 and cube.get(keep.id).text == keep.text
        # the ANN path runs on the server too
        cube.text_mem.exact_search_max = 0
        assert cube.search("balcony plants", user_id="hana", top_k=1)[0].item.id == keep.id
        # behind the cube's back: lose a vector; reopening sees the counts differ and reconciles
        lost = cube.add(memory="Hana speaks Korean.", user_id="hana")[0]
        cube.index.delete([lost.id])
    with MemCube.open(tmp_path / "served", embedder=embedder) as cube:
        assert cube.index.ids() == {keep.id, lost.id}
        assert cube.audit_log(limit=1)[0]["detail"] == {"replayed": 0, "added": 1, "removed": 0}
        cube.index.upsert([IndexRow("orphan", user_id="ghost")], embedder.embed_documents(["nobody"]))
    with MemCube.open(tmp_path / "served", embedder=embedder) as cube:  # an orphan vector is removed
        assert cube.index.ids() == {keep.id, lost.id}
        assert cube.audit_log(limit=1)[0]["action"] == "reconcile"
        assert cube.audit_log(limit=1)[0]["detail"] == {"replayed": 0, "added": 0, "removed": 1}


def test_two_cubes_on_one_server_do_not_mix(chroma_server, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    host, port = chroma_server
    with MemCube.init_from_dir(tmp_path / "one", server_config(host, port, cube_id="one"), embedder=embedder) as a, \
         MemCube.init_from_dir(tmp_path / "two", server_config(host, port, cube_id="two"), embedder=embedder) as b:
        a.add_items([MemoryItem(text="only in one")])
        b.add_items([MemoryItem(text="only in two")])
        assert a.index.count() == 1 and b.index.count() == 1
        assert a.reindex() == 1 and b.index.count() == 1


def test_same_named_cubes_on_one_server_keep_their_own_vectors(chroma_server, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    host, port = chroma_server
    with MemCube.init_from_dir(tmp_path / "alice" / "notes", server_config(host, port), embedder=embedder) as a, \
         MemCube.init_from_dir(tmp_path / "bob" / "notes", server_config(host, port), embedder=embedder) as b:
        assert a.cube_id == b.cube_id == "notes" and a.index.name != b.index.name
        a.add(memory="alice's note")
        b.add(memory="bob's note")
    # reopening one must not reconcile away the other's vectors as orphans
    with MemCube.open(tmp_path / "alice" / "notes", embedder=embedder) as a, \
         MemCube.open(tmp_path / "bob" / "notes", embedder=embedder) as b:
        assert a.index.count() == 1 and b.index.count() == 1
        assert a.audit_log() == [] and b.audit_log() == []


def test_no_server_answering_is_a_clear_backend_error(tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    port = free_port()  # nothing listens there
    with pytest.raises(BackendError, match=f"chroma run --port {port}") as err:
        MemCube.init_from_dir(tmp_path / "nowhere", server_config("127.0.0.1", port), embedder=embedder)
    assert isinstance(err.value, MemosError)
