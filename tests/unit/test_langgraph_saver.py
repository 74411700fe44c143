"""MemOSSaver beyond the conformance suite: graphs, serializers, ownership, bad input, prune with delta channels."""

from __future__ import annotations

import hashlib
import hmac
import operator
import sys
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.checkpoint.base")

from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer  # noqa: E402
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402

from memos_integrations.errors import AccessDeniedError, InvalidInputError, MissingExtraError  # noqa: E402
from memos_integrations.langgraph import CheckpointSerdeError, MemOSSaver, ThreadNotFoundError  # noqa: E402


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _graph(saver: MemOSSaver) -> Any:
    builder = StateGraph(State)
    builder.add_node("a", lambda s: {"log": ["a"]})
    builder.add_node("b", lambda s: {"log": ["b"]})
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", END)
    return builder.compile(checkpointer=saver)


class ToyCipher:
    """TEST-ONLY cipher (HMAC-SHA256 keystream + tag) standing in for AES, which needs pycryptodome.

    It proves the plumbing (EncryptedSerializer types, tamper and wrong-key detection); never use it.
    """

    def __init__(self, key: bytes) -> None:
        self.key = key

    def _stream(self, n: int) -> bytes:
        out, block = b"", 0
        while len(out) < n:
            out += hmac.new(self.key, block.to_bytes(8, "big"), hashlib.sha256).digest()
            block += 1
        return out[:n]

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        body = bytes(a ^ b for a, b in zip(plaintext, self._stream(len(plaintext))))
        return "toy", hmac.new(self.key, body, hashlib.sha256).digest() + body

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        tag, body = ciphertext[:32], ciphertext[32:]
        if ciphername != "toy" or not hmac.compare_digest(tag, hmac.new(self.key, body, hashlib.sha256).digest()):
            raise ValueError("wrong key or tampered checkpoint")
        return bytes(a ^ b for a, b in zip(body, self._stream(len(body))))


def test_graph_state_persists_across_savers(cube: Any) -> None:
    config = {"configurable": {"thread_id": "t1"}}
    assert _graph(MemOSSaver(cube)).invoke({"log": []}, config)["log"] == ["a", "b"]
    again = _graph(MemOSSaver(cube))  # a new saver over the same cube sees the thread
    assert again.get_state(config).values["log"] == ["a", "b"]
    assert len(list(again.get_state_history(config))) == 4


async def test_async_graph_and_history(cube: Any) -> None:
    graph = _graph(MemOSSaver(cube))
    config = {"configurable": {"thread_id": "t-async"}}
    assert (await graph.ainvoke({"log": ["x"]}, config))["log"] == ["x", "a", "b"]
    history = [s async for s in graph.aget_state_history(config)]
    assert history[0].values["log"] == ["x", "a", "b"] and len(history) == 4


def test_from_conn_string_and_setup(tmp_path: Any, embedder: Any) -> None:
    with MemOSSaver.from_conn_string(tmp_path / "c", embedder=embedder) as saver:
        saver.setup()  # idempotent
        _graph(saver).invoke({"log": []}, {"configurable": {"thread_id": "t"}})
    with MemOSSaver.from_conn_string(tmp_path / "c", embedder=embedder) as saver:
        assert saver.get_tuple({"configurable": {"thread_id": "t"}}) is not None


def test_encrypted_serializer_plugs_in(cube: Any) -> None:
    serde = EncryptedSerializer(ToyCipher(b"k" * 32))
    saver = MemOSSaver(cube, serde=serde)
    config = {"configurable": {"thread_id": "secret"}}
    _graph(saver).invoke({"log": ["classified"]}, config)
    row = cube.store.read("SELECT type, checkpoint FROM lg_checkpoints WHERE thread_id='secret' LIMIT 1")[0]
    assert row[0].endswith("+toy") and b"classified" not in row[1]
    assert saver.get_tuple(config).checkpoint["channel_values"]["log"][0] == "classified"
    with pytest.raises(CheckpointSerdeError, match="cannot read"):  # the same rows without the key
        MemOSSaver(cube).get_tuple(config)


def test_unknown_serializer_type_and_pickle_are_refused(cube: Any) -> None:
    with pytest.raises(InvalidInputError, match="pickle"):
        MemOSSaver(cube, serde=JsonPlusSerializer(pickle_fallback=True))
    saver = MemOSSaver(cube)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    stored = saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
    cube.store.conn.execute("UPDATE lg_checkpoints SET type='pickle'")
    with pytest.raises(CheckpointSerdeError, match="'pickle'"):
        saver.get_tuple(stored)


def test_other_users_thread_is_refused_and_audited(cube: Any) -> None:
    saver = MemOSSaver(cube)
    graph = _graph(saver)
    graph.invoke({"log": []}, {"configurable": {"thread_id": "t", "user_id": "alice"}})
    before = cube.store.read("SELECT COUNT(*) FROM lg_checkpoints")[0][0]
    with pytest.raises(AccessDeniedError, match="belongs to another user") as err:
        graph.invoke({"log": []}, {"configurable": {"thread_id": "t", "user_id": "mallory"}})
    assert "alice" not in str(err.value)  # an error never names another user
    with pytest.raises(AccessDeniedError):
        saver.get_tuple({"configurable": {"thread_id": "t", "user_id": "mallory"}})
    assert cube.store.read("SELECT COUNT(*) FROM lg_checkpoints")[0][0] == before  # nothing half-written
    assert any(not e["allowed"] and e["principal"] == "mallory" for e in cube.audit_log())


def test_mos_authorisation(tmp_path: Any, embedder: Any) -> None:
    from memos_integrations import MOS, MemCube

    mos = MOS(tmp_path / "mos", embedder=embedder)
    mos.create_user("alice")
    mos.create_user("eve")
    MemCube.init_from_dir(tmp_path / "cube", embedder=embedder).close()
    mos.register_mem_cube(tmp_path / "cube", mem_cube_id="c", user_id="alice")
    saver = MemOSSaver.from_mos(mos, "c")
    _graph(saver).invoke({"log": []}, {"configurable": {"thread_id": "t", "user_id": "alice"}})
    with pytest.raises(AccessDeniedError):
        _graph(saver).invoke({"log": []}, {"configurable": {"thread_id": "t2", "user_id": "eve"}})
    mos.close()


def test_bad_configs_and_unknown_threads(cube: Any) -> None:
    saver = MemOSSaver(cube)
    with pytest.raises(InvalidInputError, match="thread"):
        saver.get_tuple({"configurable": {}})
    with pytest.raises(ThreadNotFoundError):
        saver.copy_thread("nope", "other")
    assert saver.get_tuple({"configurable": {"thread_id": "nope"}}) is None
    with pytest.raises(InvalidInputError):
        saver.prune(["t"], strategy="sometimes")
    with pytest.raises(InvalidInputError):
        list(saver.list(None, filter={"a'; DROP TABLE x; --": 1}))


def test_prune_keeps_what_delta_channels_replay_from(cube: Any) -> None:
    saver = MemOSSaver(cube)
    parent = None
    ids = []
    for step in range(4):
        cp = empty_checkpoint()
        # step 1 holds a snapshot of delta channel "log"; later steps only count updates since it
        cp["channel_values"] = {"log": ["snapshot"]} if step == 1 else {}
        md = {"source": "loop", "step": step}
        if step >= 2:
            md["counters_since_delta_snapshot"] = {"log": [step - 1, step - 1]}
        config = {"configurable": {"thread_id": "d", "checkpoint_ns": "", **({"checkpoint_id": parent} if parent else {})}}
        parent = saver.put(config, cp, md, {})["configurable"]["checkpoint_id"]
        ids.append(parent)
    saver.prune(["d"])
    kept = [t.checkpoint["id"] for t in saver.list({"configurable": {"thread_id": "d"}})]
    assert kept == [ids[3], ids[2], ids[1]]  # the snapshot and everything after it survive


def test_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "memos_integrations.langgraph" or m.startswith("memos_integrations.langgraph.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.base", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'memos-integrations\[langgraph\]'"):
        import memos_integrations.langgraph  # noqa: F401
