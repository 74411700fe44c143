"""Two users (alice, bob) and two agents (scout, helper) interleave every face on ONE cube; no face ever
hands one user another's data, and no user's write or delete ever reaches another's.

The per-face suites (``test_isolation_langchain.py``, ``..._langgraph.py``, ``..._llama_index.py``) drive
each face alone. Here a hypothesis-chosen sequence of steps mixes them on one cube, so a scope check that
only holds while one face is in play (an id space two faces share, a filter that forgets a kind, a
delete that reaches by id) is caught. Each step is one call through one face, made either by an object
bound to its user or by an unbound one inside a LangGraph run that names the user (``context=`` or
``configurable``):

- LangChain ``MemOSVectorStore`` (scoped to a user and an agent): ``add_texts``, ``similarity_search``,
  ``get_by_ids``, ``delete``, and a bound store used in another user's run (refused);
- LangChain ``MemOSChatMessageHistory`` (``remember=True``, so turns become memories): add and read;
- LangGraph ``MemOSStore`` under ``("users", u, ...)``, called through ``get_store()`` inside a compiled
  graph: ``put``, ``get``, ``search``, ``delete``, ``list_namespaces``, aimed at the user's own
  namespace or at the other user's (refused);
- LlamaIndex ``MemOSVectorStore`` (user, namespace; node ids shared by both users): add, query,
  ``get_nodes``, ``delete_nodes``, and a bound store in another user's run (refused);
- LlamaIndex ``MemOSChatStore`` keyed by (user, session key; keys shared by both users): add, set, get,
  delete;
- the core ``cube.search(user_id=u)``.

Every write carries a unique marker naming its writer (``mk-alice-scout-3-17``). The test keeps a model
of what each user wrote and, after EVERY step, compares the whole cube with it: the live memories of
this example (their texts, owners and agents), both chat tables and the LangGraph store rows. So a read
that returns another user's marker fails at once, a delete or overwrite that reaches another user's data
fails at the next check, and a refused call must raise ``AccessDeniedError``, add exactly one denial to
the audit log and leave the cube exactly as the model says.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import count
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("langgraph")
pytest.importorskip("llama_index.core")

from langgraph.config import get_store  # noqa: E402
from langgraph.graph import START, StateGraph  # noqa: E402
from llama_index.core.llms import ChatMessage  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores.types import VectorStoreQuery  # noqa: E402
from typing_extensions import TypedDict  # noqa: E402

from memos_integrations import MemCube  # noqa: E402
from memos_integrations.errors import AccessDeniedError  # noqa: E402
from memos_integrations.langchain import MemOSChatMessageHistory  # noqa: E402
from memos_integrations.langchain import MemOSVectorStore as LCVectorStore  # noqa: E402
from memos_integrations.langgraph import MemOSStore  # noqa: E402
from memos_integrations.llama_index import MemOSChatStore  # noqa: E402
from memos_integrations.llama_index import MemOSVectorStore as LIVectorStore  # noqa: E402

USERS = ("alice", "bob")
AGENTS = ("scout", "helper")
MARK = re.compile(r"mk-(alice|bob)-(scout|helper|none)-(\d+)-(\d+)")
QUERY = "secret note"

OPS = ("lc_add", "lc_add", "lc_search", "lc_get", "lc_delete", "lc_conflict",
       "hist_add", "hist_read",
       "lg_put", "lg_put", "lg_get", "lg_search", "lg_delete", "lg_list",
       "li_add", "li_add", "li_query", "li_get", "li_delete", "li_conflict",
       "lic_add", "lic_set", "lic_get", "lic_delete",
       "core_search")
steps = st.lists(
    st.tuples(
        st.sampled_from(OPS),
        st.sampled_from(USERS),
        st.sampled_from(AGENTS),
        st.sampled_from(("bound", "context", "configurable")),  # who is acting: binding, or the run names the user
        st.integers(0, 11),  # picks ids, keys, namespaces
        st.booleans(),  # aim at the other user: a LangGraph namespace of theirs, a shared LangChain session
    ),
    min_size=10,
    max_size=30,
)
_example = count()


class _Empty(TypedDict, total=False):
    x: int


class Runner:
    """One compiled LangGraph graph with the store: its only node runs the step's work inside the run."""

    def __init__(self, store: MemOSStore) -> None:
        self.work: Any = None
        self.out: Any = None
        graph = StateGraph(_Empty, context_schema=dict)  # type: ignore[type-var]
        graph.add_node("work", self._node)
        graph.add_edge(START, "work")
        self.graph = graph.compile(store=store)

    def _node(self, state: _Empty) -> dict[str, Any]:
        self.out = self.work()
        return {}

    def __call__(self, user: str, work: Any, via: str) -> Any:
        self.work, self.out = work, None
        if via == "configurable":
            self.graph.invoke({"x": 1}, config={"configurable": {"user_id": user}})
        else:
            self.graph.invoke({"x": 1}, context={"user_id": user})
        return self.out


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Any:
    """A new cube (with its LangGraph store and graph) per example: ~30 ms, and every example starts clean."""
    opened: list[MemCube] = []

    def make() -> tuple[MemCube, Runner]:
        cube = MemCube.init_from_dir(tmp_path_factory.mktemp("cross_face") / "cube", embedder=embedder)
        opened.append(cube)
        MemOSChatMessageHistory(cube, "schema"), MemOSChatStore.from_defaults(cube)  # their tables exist from the start
        return cube, Runner(MemOSStore(cube, index=True))

    yield make
    for cube in opened:
        cube.close()


@pytest.fixture(scope="module")
def query_vector(embedder: Any) -> list[float]:
    return [float(x) for x in embedder.embed_query(QUERY)]


def other(user: str) -> str:
    return USERS[1 - USERS.index(user)]


def markers(text: str) -> list[tuple[str, str]]:
    """(user, agent) of every marker in ``text``."""
    return [(m.group(1), m.group(2)) for m in MARK.finditer(text)]


def first(text: str) -> str:
    """The first marker in ``text``."""
    found = MARK.search(text)
    assert found is not None, f"no marker in {text!r}"
    return found.group(0)


def only(user: str, texts: list[str]) -> None:
    """No text in ``texts`` carries a marker of anyone but ``user``."""
    found = {u for t in texts for u, _ in markers(t)}
    assert found <= {user}, f"{user} was handed {sorted(found - {user})}'s data: {texts}"


class Model:
    """What each user wrote in one example; compared with the whole cube after every step."""

    def __init__(self, run: int) -> None:
        self.run = run
        self.serial = count()
        self.lc_owner: dict[str, tuple[str, str]] = {}  # LangChain doc id -> (user, agent) that first wrote it
        self.lc_live: dict[str, str] = {}  # doc id -> live marker
        self.hist: dict[tuple[str, str], list[str]] = {}  # (session, user) -> transcript: sessions are per user
        self.remembered: dict[str, list[str]] = {u: [] for u in USERS}  # turns read into memory
        self.lg: dict[tuple[str, str], str] = {}  # (user, key) -> marker
        self.li: dict[tuple[str, str, str], str] = {}  # (user, namespace, node id) -> marker
        self.chat: dict[tuple[str, str], list[str]] = {}  # (user, chat key) -> messages

    def marker(self, user: str, agent: str | None) -> str:
        return f"mk-{user}-{agent or 'none'}-{self.run}-{next(self.serial)}"

    def live_markers(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {u: set(self.remembered[u]) for u in USERS}
        for doc, mark in self.lc_live.items():
            out[self.lc_owner[doc][0]].add(mark)
        for (u, _), mark in self.lg.items():
            out[u].add(mark)
        for (u, _, _), mark in self.li.items():
            out[u].add(mark)
        return out


def test_users_never_reach_each_other_through_any_face(fresh: Any, query_vector: list[float]) -> None:
    """25 fixed sequences (derandomized: the same ones every run, ~0.3 s each); make stress runs 200 new
    random ones through the same check (tests/stress/test_stress_isolation_cross_face.py)."""
    cross_face_run(fresh, query_vector, max_examples=25, derandomize=True)


def cross_face_run(fresh: Any, query_vector: list[float], *, max_examples: int, derandomize: bool) -> None:
    """Run ``max_examples`` hypothesis sequences (plus the explicit one), each on a new cube, then check
    that every face, every call and every kind of refusal was exercised."""
    seen: Counter[tuple[str, bool]] = Counter()

    # no shrinking: each attempt replays a whole sequence on a new cube, and the unshrunk failing
    # sequence (at most 30 steps) is printed whole, with the step that failed named in the assertion
    @settings(max_examples=max_examples, deadline=None, derandomize=derandomize,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(steps)
    @example([("hist_add", "alice", "scout", "bound", 0, True), ("hist_add", "bob", "helper", "context", 0, True),
              ("hist_read", "bob", "helper", "configurable", 0, True), ("lc_add", "alice", "scout", "bound", 0, False),
              ("lc_add", "bob", "helper", "context", 0, False), ("lg_put", "alice", "scout", "bound", 0, False),
              ("lg_get", "bob", "helper", "configurable", 0, True), ("li_add", "alice", "scout", "context", 0, False),
              ("li_add", "bob", "scout", "bound", 0, False), ("li_delete", "bob", "scout", "context", 0, False),
              ("li_get", "alice", "scout", "bound", 0, False), ("core_search", "bob", "helper", "bound", 0, False)])
    def check(sequence: list[tuple[str, str, str, str, int, bool]]) -> None:
        cube, in_run = fresh()
        model = Model(next(_example))
        try:
            for op, user, agent, via, n, aim in sequence:
                step = Step(model, cube, in_run, query_vector, op, user, agent, via, n, aim)
                refused = step.refused()
                seen[(op, refused)] += 1
                if refused:
                    before, seq = observe(cube), last_audit(cube)
                    with pytest.raises(AccessDeniedError):
                        step.run()
                    assert observe(cube) == before, f"refused {op} by {user} changed the cube"
                    new = [r for r in cube.audit_log(limit=10) if r["seq"] > seq]
                    assert [r["allowed"] for r in new] == [False], f"refused {op} by {user} is audited once: {new}"
                else:
                    step.run()
                agrees(cube, model)
        finally:
            cube.close()

    check()
    assert {op for op, _ in seen} == set(OPS), "every face and call was exercised"
    refused_faces = {op.split("_")[0] for (op, refused), _ in seen.items() if refused}
    # a chat history never refuses its own user: sessions are per user, so a name another user holds is a new one
    assert refused_faces == {"lc", "lg", "li"}, "every face that can refuse refused something"
    assert sum(n for (_, refused), n in seen.items() if refused) >= 50, "refusals were exercised"


def last_audit(cube: MemCube) -> int:
    rows = cube.audit_log(limit=1)
    return int(rows[0]["seq"]) if rows else 0


def observe(cube: MemCube) -> dict[str, Any]:
    """Everything in the cube: live memories, both chat tables, the LangGraph store rows."""
    return {
        "items": sorted((i.id, i.text, i.user_id, i.agent_id, i.version) for i in cube.get_all()),
        "lc_chat": cube.store.read("SELECT session_id, user_id, message FROM langchain_messages ORDER BY seq"),
        "li_chat": cube.store.read("SELECT key, user_id, status, message FROM llama_index_chat ORDER BY seq"),
        "lg": cube.store.read("SELECT ns, key, value FROM lg_store ORDER BY ns, key"),
    }


def agrees(cube: MemCube, model: Model) -> None:
    """The cube holds exactly what the model says each user wrote, each under its writer's scope."""
    mine = [i for i in cube.get_all() if MARK.search(i.text)]
    live: dict[str, set[str]] = {u: set() for u in USERS}
    for item in mine:
        for user, agent in markers(item.text):
            assert item.user_id == user, f"{user}'s marker is held by {item.user_id}: {item.text!r}"
            if item.kind.value == "document":  # LangChain documents carry their agent too
                assert item.agent_id == agent, f"{user}/{agent}'s document is held by agent {item.agent_id}"
            live[user].add(first(item.text))
    assert live == model.live_markers(), "a write or delete reached data the model does not expect"
    chats = cube.store.read("SELECT DISTINCT user_id, key FROM llama_index_chat WHERE key != 'schema'")
    assert set(chats) == {k for k, messages in model.chat.items() if messages}
    sessions = cube.store.read("SELECT DISTINCT session_id FROM langchain_messages")
    assert {r[0] for r in sessions} == {s for s, _ in model.hist}
    for (u, key), messages in model.chat.items():
        rows = cube.store.read("SELECT message FROM llama_index_chat WHERE key = ? AND user_id = ? "
                               "ORDER BY seq", (key, u))
        assert [ChatMessage.model_validate_json(r[0]).content for r in rows] == messages
    for (session, user), transcript in model.hist.items():
        rows = cube.store.read("SELECT message FROM langchain_messages WHERE session_id = ? AND user_id = ? "
                               "ORDER BY seq", (session, user))
        assert [first(m) for (m,) in rows] == transcript
    lg_rows = cube.store.read("SELECT ns, key, value FROM lg_store")
    assert {(ns.split(".")[1], key) for ns, key, _ in lg_rows} == set(model.lg)
    for ns, key, value in lg_rows:
        assert model.lg[(ns.split(".")[1], key)] in value


class Step:
    """One call through one face for one user, with what the model expects of it."""

    def __init__(self, model: Model, cube: Any, in_run: Runner, qvec: list[float], op: str, user: str, agent: str,
                 via: str, n: int, aim: bool) -> None:
        self.model, self.cube, self.in_run, self.qvec = model, cube, in_run, qvec
        self.op, self.user, self.agent, self.via, self.n = op, user, agent, via, n
        run = model.run
        self.doc = f"d{n % 2}-{run}-"  # LangChain doc ids: shared by both users and agents
        # LangChain sessions: one named by both users (each has a transcript of that name), or the user's own
        self.session = f"h-shared-{run}-" if aim else f"h-{user}-{run}-"
        self.target = other(user) if aim else user  # LangGraph: the user's own namespace, or the other's
        self.ns = ("users", self.target, f"notes-{run}-")
        self.prefix = ("users",) if n % 4 == 1 else self.ns  # search across every user's namespaces, or in one
        self.key = f"k{n % 3}"
        self.li_ns = f"v{n % 2}-{run}-"  # LlamaIndex namespaces and node ids: the same for both users
        self.node = f"n{n % 3}"
        self.chat_key = f"c{n % 2}-{run}-"

    # -- who acts ---------------------------------------------------------------------------------
    def act(self, make: Any, work: Any, *, run_user: str | None = None) -> Any:
        """Build the face object bound to the user (``make(user)``) and call it, or build it unbound and
        call it inside a LangGraph run naming the user (``run_user`` overrides whom the run names)."""
        if self.via == "bound" and run_user is None:
            return work(make(self.user))
        obj = make(self.user if run_user is not None else None)
        via = "context" if self.via == "bound" else self.via
        return self.in_run(run_user or self.user, lambda: work(obj), via)

    def refused(self) -> bool:
        m, op = self.model, self.op
        if op in ("lc_conflict", "li_conflict"):
            return True
        if op == "lc_add":
            return m.lc_owner.get(self.doc, (self.user, self.agent)) != (self.user, self.agent)
        if op in ("lg_put", "lg_get", "lg_delete") or (op == "lg_search" and self.prefix == self.ns):
            return self.target != self.user
        return False

    def run(self) -> None:
        getattr(self, self.op)()

    # -- LangChain vector store -------------------------------------------------------------------
    def lc_store(self, user: str | None) -> LCVectorStore:
        return LCVectorStore(self.cube, user_id=user, agent_id=self.agent)

    def lc_add(self) -> None:
        mark = self.model.marker(self.user, self.agent)
        assert self.act(self.lc_store, lambda s: s.add_texts([f"{mark} keeps a secret note"], ids=[self.doc])) == [
            self.doc]
        self.model.lc_owner.setdefault(self.doc, (self.user, self.agent))
        self.model.lc_live[self.doc] = mark

    def lc_mine(self) -> set[str]:
        return {d for d, mark in self.model.lc_live.items() if self.model.lc_owner[d] == (self.user, self.agent)}

    def lc_search(self) -> None:
        docs = self.act(self.lc_store, lambda s: s.similarity_search(QUERY, k=10))
        only(self.user, [d.page_content for d in docs])
        here = {d.id for d in docs if d.id.endswith(f"-{self.model.run}-")}
        assert here == self.lc_mine()

    def lc_get(self) -> None:
        ids = [f"d{i}-{self.model.run}-" for i in range(2)]
        docs = self.act(self.lc_store, lambda s: s.get_by_ids(ids))
        only(self.user, [d.page_content for d in docs])
        assert {d.id for d in docs} == self.lc_mine()

    def lc_delete(self) -> None:
        expect = self.doc in self.lc_mine()
        assert self.act(self.lc_store, lambda s: s.delete([self.doc])) is expect
        if expect:
            del self.model.lc_live[self.doc]

    def lc_conflict(self) -> None:
        """A store bound to this user, used in a run that names the other user."""
        self.act(self.lc_store, lambda s: s.similarity_search(QUERY), run_user=other(self.user))

    # -- LangChain chat history -------------------------------------------------------------------
    def history(self, user: str | None) -> MemOSChatMessageHistory:
        return MemOSChatMessageHistory(self.cube, self.session, user_id=user, remember=True)

    def hist_add(self) -> None:
        mark = self.model.marker(self.user, None)
        self.act(self.history, lambda h: h.add_user_message(f"{mark} tells a secret note"))
        self.model.hist.setdefault((self.session, self.user), []).append(mark)
        self.model.remembered[self.user].append(mark)

    def hist_read(self) -> None:
        messages = self.act(self.history, lambda h: h.messages)
        only(self.user, [str(m.content) for m in messages])
        assert [first(str(m.content)) for m in messages] == self.model.hist.get((self.session, self.user), [])

    # -- LangGraph store (always inside the graph: the store is get_store()) ----------------------
    def lg(self, work: Any) -> Any:
        return self.in_run(self.user, lambda: work(get_store()), "context" if self.via == "bound" else self.via)

    def lg_put(self) -> None:
        mark = self.model.marker(self.user, None)
        self.lg(lambda s: s.put(self.ns, self.key, {"text": f"{mark} keeps a secret note"}))
        self.model.lg[(self.user, self.key)] = mark

    def lg_get(self) -> None:
        got = self.lg(lambda s: s.get(self.ns, self.key))
        want = self.model.lg.get((self.user, self.key))
        assert (None if got is None else MARK.search(got.value["text"]).group(0)) == want  # type: ignore[union-attr]

    def lg_delete(self) -> None:
        self.lg(lambda s: s.delete(self.ns, self.key))
        self.model.lg.pop((self.user, self.key), None)

    def lg_search(self) -> None:
        hits = self.lg(lambda s: s.search(self.prefix, query=QUERY, limit=50))
        only(self.user, [h.value["text"] for h in hits])
        assert all(h.namespace[1] == self.user for h in hits)
        here = {h.key for h in hits if h.namespace == ("users", self.user, f"notes-{self.model.run}-")}
        assert here == {k for u, k in self.model.lg if u == self.user}

    def lg_list(self) -> None:
        spaces = self.lg(lambda s: s.list_namespaces(prefix=("users",)))
        assert all(ns[1] == self.user for ns in spaces), spaces
        here = [ns for ns in spaces if ns[-1] == f"notes-{self.model.run}-"]
        assert here == ([("users", self.user, f"notes-{self.model.run}-")]
                        if any(u == self.user for u, _ in self.model.lg) else [])

    # -- LlamaIndex vector store ------------------------------------------------------------------
    def li_store(self, user: str | None) -> LIVectorStore:
        return LIVectorStore.from_defaults(cube=self.cube, user_id=user, namespace=self.li_ns, embed_missing=True)

    def li_mine(self) -> dict[str, str]:
        return {node: mark for (u, ns, node), mark in self.model.li.items() if u == self.user and ns == self.li_ns}

    def li_add(self) -> None:
        mark = self.model.marker(self.user, None)
        node = TextNode(id_=self.node, text=f"{mark} keeps a secret note")
        assert self.act(self.li_store, lambda s: s.add([node])) == [self.node]
        self.model.li[(self.user, self.li_ns, self.node)] = mark

    def li_query(self) -> None:
        res = self.act(self.li_store, lambda s: s.query(VectorStoreQuery(query_embedding=self.qvec,
                                                                           similarity_top_k=10)))
        only(self.user, [n.get_content() for n in res.nodes])
        assert {n.node_id: first(n.get_content()) for n in res.nodes} == self.li_mine()

    def li_get(self) -> None:
        nodes = self.act(self.li_store, lambda s: s.get_nodes())
        only(self.user, [n.get_content() for n in nodes])
        assert {n.node_id: first(n.get_content()) for n in nodes} == self.li_mine()

    def li_delete(self) -> None:
        self.act(self.li_store, lambda s: s.delete_nodes([self.node]))
        self.model.li.pop((self.user, self.li_ns, self.node), None)

    def li_conflict(self) -> None:
        self.act(self.li_store, lambda s: s.get_nodes(), run_user=other(self.user))

    # -- LlamaIndex chat store --------------------------------------------------------------------
    def chat_store(self, user: str | None) -> MemOSChatStore:
        return MemOSChatStore.from_defaults(self.cube, user_id=user)

    def lic_add(self) -> None:
        mark = self.model.marker(self.user, None)
        self.act(self.chat_store, lambda s: s.add_message(self.chat_key, ChatMessage(role="user", content=mark)))
        self.model.chat.setdefault((self.user, self.chat_key), []).append(mark)

    def lic_set(self) -> None:
        mark = self.model.marker(self.user, None)
        self.act(self.chat_store, lambda s: s.set_messages(self.chat_key, [ChatMessage(role="user", content=mark)]))
        self.model.chat[(self.user, self.chat_key)] = [mark]

    def lic_get(self) -> None:
        got, keys = self.act(self.chat_store, lambda s: (s.get_messages(self.chat_key), s.get_keys()))
        only(self.user, [str(m.content) for m in got])
        assert [m.content for m in got] == self.model.chat.get((self.user, self.chat_key), [])
        here = {k for k in keys if k.endswith(f"-{self.model.run}-")}
        assert here == {k for (u, k), msgs in self.model.chat.items() if u == self.user and msgs}

    def lic_delete(self) -> None:
        self.act(self.chat_store, lambda s: s.delete_messages(self.chat_key))
        self.model.chat[(self.user, self.chat_key)] = []

    # -- the core ---------------------------------------------------------------------------------
    def core_search(self) -> None:
        hits = self.cube.search(QUERY, user_id=self.user, top_k=20)
        assert {h.item.user_id for h in hits} <= {self.user}
        only(self.user, [h.item.text for h in hits])


def test_llama_index_in_a_graph_run_naming_the_user_in_configurable_acts_for_that_user(cube: MemCube) -> None:
    """An unbound LlamaIndex chat store / vector store inside ``graph.invoke(..., config={"configurable":
    {"user_id": "bob"}})`` writes rows of NO user (the bucket an unbound store outside a run reads), so a
    run for alice named the same way reads bob's messages. LangChain and LangGraph faces honour it."""
    runner = Runner(MemOSStore(cube, index=True))
    chat = MemOSChatStore.from_defaults(cube)
    vectors = LIVectorStore.from_defaults(cube=cube, embed_missing=True)
    runner("bob", lambda: chat.add_message("s1", ChatMessage(role="user", content="bob's secret words")), "configurable")
    runner("bob", lambda: vectors.add([TextNode(id_="n0", text="bob's secret note")]), "configurable")
    seen_by_alice = runner("alice", lambda: [m.content for m in chat.get_messages("s1")], "configurable")
    nodes_for_alice = runner("alice", lambda: [n.get_content() for n in vectors.get_nodes()], "configurable")
    assert cube.store.read("SELECT user_id FROM llama_index_chat WHERE key = 's1'") == [("bob",)]
    assert [i.user_id for i in cube.get_all()] == ["bob"]
    assert seen_by_alice == [] and nodes_for_alice == []
