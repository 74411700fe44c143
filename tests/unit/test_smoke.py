def test_cube_roundtrip(cube):
    items = cube.add(memory="Alice likes genmaicha tea.", user_id="alice")
    assert cube.search("what tea does alice like", user_id="alice")[0].item.id == items[0].id
