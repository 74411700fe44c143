"""The reader behind the faces: a LangGraph store namespace kept in step with what the reader decided.

The LangChain middleware and the LlamaIndex memory block write with ``cube.add(messages=...)``, so
they read through the cube's reader as they are (their ``reader_mode`` picks the mode). A LangGraph
``BaseStore`` namespace is a separate view: :func:`remember_in_store` reads the messages with the
cube's reader and mirrors the decision into the namespace (ADD / UPDATE put the memory under its
cube id, SUPERSEDE replaces the old key by the new one, DELETE removes it), so ``recall`` finds the
current truth there, while the cube keeps every version (``cube.history``, ``as_of``).

Async mode writes to the cube only (the namespace is mirrored for decisions made before the call
returns, that is fine mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidInputError


def cube_of(store: Any) -> Any:
    cube = getattr(store, "cube", None)
    if cube is None or getattr(cube, "reader", None) is None:
        raise InvalidInputError(
            "writing through the LLM reader needs a MemOSStore over a cube with a reader: "
            "MemCube.open(path, reader=LLMReader.from_openai(...)), then MemOSStore(cube)")
    return cube


def remember_in_store(store: Any, namespace: tuple[str, ...], messages: Sequence[Mapping[str, Any]], *, scope: Any,
                      sources: Sequence[str], session_id: str | None, mode: str, feedback: bool = False) -> Any:
    """Read ``messages`` with the cube's reader and mirror the decision into ``namespace``.

    Args:
        store: a ``MemOSStore`` (``store.cube`` has a reader).
        namespace: the filled namespace the memories are mirrored into (keys are the cube's memory ids).
        messages: ``{"role", "content"}`` dicts; each gets the acting user's id as its ``name``.
        scope: who is acting (``resolve_scope``).
        sources: provenance pointers for the mirrored values.
        session_id: the session (the run's thread).
        mode: ``fine`` mirrors the decision; ``async`` only queues it in the cube.
        feedback: read it as a correction (``cube.feedback``).

    Returns:
        The cube's ``AddResult``.

    Raises:
        InvalidInputError: the store has no cube with a reader.
    """
    cube = cube_of(store)
    if scope.user_id is not None:  # the model names the user by who is acting, as cube.feedback does
        messages = [{"name": scope.user_id, **m} for m in messages]
    if feedback:
        text = " ".join(str(m.get("content") or "") for m in messages)
        result = cube.feedback(text, user_id=scope.user_id, session_id=session_id, principal=scope.principal)
    else:
        result = cube.add(messages=list(messages), user_id=scope.user_id, agent_id=scope.agent_id, session_id=session_id,
                          principal=scope.principal, mode=mode)

    def put(key: str, text: str) -> None:
        value = {"text": text, "source": list(sources), "memory_id": key}
        if hasattr(store, "put_with_provenance"):
            store.put_with_provenance(namespace, key, value, sources=list(sources))
        else:
            store.put(namespace, key, value)

    def drop(key: str) -> None:
        if store.get(namespace, key) is not None:
            store.delete(namespace, key)

    for op in getattr(result, "operations", []):
        if op[0] == "ADD":
            put(op[1], op[2])
        elif op[0] == "UPDATE":
            put(op[1], op[3])
        elif op[0] == "SUPERSEDE":
            drop(op[1])
            put(op[2], cube.get(op[2]).text)
        elif op[0] == "DELETE":
            drop(op[1])
    return result
