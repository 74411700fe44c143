"""The in-memory vector cache must never serve a vector that SQLite no longer holds."""

from memos_integrations import MemCube


def test_cache_sees_writes_from_another_connection(tmp_path, embedder):
    a = MemCube.init_from_dir(tmp_path / "c", embedder=embedder)
    b = MemCube.open(tmp_path / "c", embedder=embedder)  # a second connection, as a second process would have
    item = a.add(memory="The spare key is under the blue flowerpot.", user_id="u")[0]
    other = a.add(memory="Quarterly taxes are due in April.", user_id="u")[0]
    assert b.search("where is the spare key", user_id="u", plan="fast")[0].item.id == item.id  # b caches vectors now
    a.update(item.id, text="The accountant files the quarterly VAT return.")
    a.update(other.id, text="The spare key hangs in the garden shed.")
    top = b.search("where is the spare key", user_id="u", plan="fast")[0]
    assert top.item.id == other.id, "b scored a stale cached vector"
    a.close()
    b.close()


def test_own_updates_refresh_the_cache(cube):
    first = cube.add(memory="Pixel the beagle loves puzzle toys.", user_id="u")[0]
    cube.add(memory="The bakery opens at seven.", user_id="u")
    assert cube.search("dog toys", user_id="u", plan="fast")[0].item.id == first.id
    rid = cube.store.read("SELECT rid FROM items WHERE id=?", (first.id,))[0][0]
    cube.update(first.id, text="Invoices are archived every Friday.")
    _, cached = cube.store.vectors_for([rid])
    expected = cube.embedder.embed_documents(["Invoices are archived every Friday."])[0]
    assert float(cached[0] @ expected) > 0.9999
    assert cube.search("archived invoices", user_id="u", plan="fast")[0].item.id == first.id
    cube.delete(first.id)
    assert all(h.item.id != first.id for h in cube.search("invoices", user_id="u", plan="fast"))


def test_usage_counts_are_buffered_then_written(cube):
    item = cube.add(memory="Maya runs three mornings a week.", user_id="u")[0]
    for _ in range(3):
        cube.search("how often does Maya run", user_id="u")
    assert cube.store.usage([item.id])[item.id][0] == 3
    cube.close()
    reopened = MemCube.open(cube.path, embedder=cube.embedder)
    assert reopened.store.read("SELECT access_count FROM items WHERE id=?", (item.id,))[0][0] == 3
    reopened.close()


def test_ann_path_returns_k_hits_even_when_the_filter_is_invisible_to_chroma(tmp_path, embedder):
    """More candidates than the exact limit, and a metadata filter Chroma cannot pre-apply."""
    from memos_integrations import CubeConfig
    from memos_integrations.config import VectorConfig

    cube = MemCube.init_from_dir(tmp_path / "ann", CubeConfig(vector=VectorConfig(exact_search_max=10)), embedder=embedder)
    texts = [f"Weather report number {i}: light rain over the harbour." for i in range(60)]
    metas = [{"rare": i % 20 == 0} for i in range(60)]
    for text, meta in zip(texts, metas):
        cube.add(memory=text, user_id="u", metadata=meta)
    cube.add(memory=[f"Recipe {i}: lentil soup with cumin." for i in range(5)], user_id="u", metadata={"rare": True})
    hits = cube.search("rain at the harbour", user_id="u", metadata={"rare": True}, top_k=8, plan="fast")
    assert len(hits) == 8                                  # 3 weather + 5 recipes match: all 8 come back
    assert all(h.item.metadata["rare"] is True for h in hits)
    assert sum("Weather" in h.item.text for h in hits[:3]) == 3   # the relevant ones first
    cube.close()
