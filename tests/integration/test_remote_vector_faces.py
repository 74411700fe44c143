"""The vector-store faces on a RemoteCube: each face's own suite once more, over the real service on loopback.

``MemOSVectorStore(RemoteCube(...))`` (LangChain and LlamaIndex) forwards every operation to
``/v1/vector-stores/...``, where the service runs the same face for the key's user. Here: langchain-tests'
``VectorStoreIntegrationTests`` and ``RetrieversIntegrationTests``, and our LlamaIndex vector-store suite
(tests/unit/test_llama_index_vector_store.py), each with a remote cube; then what a service adds: keys
naming the user (alice cannot reach bob's ids, refusals audited), bodies over the limit, hostile vectors.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("langchain_tests")
pytest.importorskip("llama_index.core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests, VectorStoreIntegrationTests  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index.core.vector_stores.types import VectorStoreQuery  # noqa: E402

import tests.unit.test_llama_index_memory as li_memory_suite  # noqa: E402
import tests.unit.test_llama_index_vector_store as li_suite  # noqa: E402
from memos_integrations import MOS  # noqa: E402
from memos_integrations.errors import (  # noqa: E402
    AccessDeniedError,
    EmbedderMismatchError,
    InvalidInputError,
    OversizedInputError,
)
from memos_integrations.face_api import as_cube  # noqa: E402
from memos_integrations.langchain import (
    MemOSRetriever,  # noqa: E402
    MemOSVectorStore,  # noqa: E402
)
from memos_integrations.langchain.vectorstore import RemoteVectorStore as RemoteLangChainStore  # noqa: E402
from memos_integrations.llama_index import MemOSVectorStore as LlamaStore  # noqa: E402
from memos_integrations.llama_index.vector_store import RemoteVectorStore as RemoteLlamaStore  # noqa: E402
from memos_integrations.remote import RemoteCube  # noqa: E402
from memos_integrations.server.app import create_app  # noqa: E402
from memos_integrations.server.limits import Limits  # noqa: E402
from memos_integrations.storage.keys import KeyStore  # noqa: E402
from tests.integration.test_remote_cube import serve  # noqa: E402

BODY_LIMIT = 64 * 1024  # small, so that batching and the limit are exercised with a few nodes
_fresh = itertools.count()


def LangChainStore(cube: Any, *args: Any, **kwargs: Any) -> MemOSVectorStore:  # noqa: N802
    """``MemOSVectorStore(cube, ...)``, typed for any cube (a RemoteCube's path is a PurePosixPath)."""
    return MemOSVectorStore(as_cube(cube, "test"), *args, **kwargs)


class Service(NamedTuple):
    url: str
    mos: MOS
    keys: dict[str, str]

    def cube(self, user: str = "alice", cube_id: str | None = None, **kw: Any) -> RemoteCube:
        """A RemoteCube on a new cube that ``user`` owns (or on ``cube_id``)."""
        if cube_id is None:
            cube_id = self.mos.create_cube_for_user(f"c{next(_fresh)}", owner_id=user)
        return RemoteCube(self.url, self.keys[user], cube_id=cube_id, **kw)


def _service(home: Path, embedder: Any) -> Iterator[Service]:
    mos = MOS(home, embedder=embedder)
    for user in ("alice", "bob"):
        mos.create_user(user)
    keys = KeyStore.open(mos.home)
    issued = {user: keys.create(user)[0] for user in ("alice", "bob")}
    limits = Limits(rate=0, max_body_bytes=BODY_LIMIT)
    url, stop = serve(create_app(mos, keys=keys, limits=limits, mcp=False))  # type: ignore[misc]
    try:
        yield Service(url, mos, issued)
    finally:
        stop()
        close = getattr(keys, "close", None)
        if callable(close):
            close()
        mos.close()


@pytest.fixture(scope="module")
def fake_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Cubes embedded with langchain-tests' DeterministicFakeEmbedding(size=6), as its suite expects."""
    yield from _service(tmp_path_factory.mktemp("fake-home"), DeterministicFakeEmbedding(size=6))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Service]:
    """Cubes embedded with the real MiniLM (384 dims)."""
    yield from _service(tmp_path_factory.mktemp("minilm-home"), embedder)


# -- LangChain: langchain-tests' own suites ----------------------------------------------------------

class TestRemoteVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, fake_service: Service) -> Iterator[VectorStore]:  # type: ignore[override]
        with fake_service.cube() as cube:
            store = LangChainStore(cube, self.get_embeddings())
            assert type(store) is RemoteLangChainStore
            yield store


_retrieval: dict[str, Any] = {}


class TestRemoteRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _cube(self, service: Service) -> Iterator[None]:
        if "cube" not in _retrieval:
            cube = service.cube()
            cube.add(memory=[f"Alice's note {n}: she likes tea number {n}" for n in range(6)])
            _retrieval["cube"] = cube
        yield

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return MemOSRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"cube": _retrieval["cube"], "user_id": "alice"}

    @property
    def retriever_query_example(self) -> str:
        return "what tea does alice like?"


# -- LlamaIndex: our vector-store suite, with a remote cube ------------------------------------------

@pytest.fixture
def cube(service: Service) -> Iterator[RemoteCube]:  # overrides the suite's local cube for the tests below
    with service.cube() as remote:
        yield remote


#: tests that only query the suite's six nodes: they share one remote cube (a cube per test costs ~0.4 s)
_READ_ONLY = {
    "test_each_operator_matches_simple", "test_each_condition_matches_simple",
    "test_nested_filters_match_set_algebra_over_simple", "test_default_mode_scores_are_cosine_like_simple",
    "test_node_ids_and_doc_ids_restrict", "test_hybrid_and_sparse_use_the_keyword_index",
    "test_unsupported_filters_are_clear_errors", "test_bad_queries_are_clear_errors",
}


@pytest.fixture(scope="module")
def shared_stores(service: Service) -> Iterator[Any]:
    with service.cube() as remote:
        yield _stores(remote)


def _stores(remote: RemoteCube) -> Any:
    """What the suite's ``stores`` fixture builds: ours and SimpleVectorStore on the same nodes, and a query."""
    from llama_index.core.vector_stores import SimpleVectorStore

    ours, simple = LlamaStore.from_defaults(cube=remote), SimpleVectorStore()
    assert type(ours) is RemoteLlamaStore
    ours.add(li_suite.make_nodes())
    simple.add(li_suite.make_nodes())
    q = np.random.default_rng(1).normal(size=li_suite.DIM)
    return ours, simple, (q / np.linalg.norm(q)).tolist()


@pytest.fixture
def stores(request: pytest.FixtureRequest) -> Any:
    """The suite's ``stores`` fixture, on a remote cube."""
    if request.node.originalname.removesuffix("_remote") in _READ_ONLY:
        return request.getfixturevalue("shared_stores")
    return _stores(request.getfixturevalue("cube"))


_REMOTE_LI = [
    "test_each_operator_matches_simple", "test_each_condition_matches_simple",
    "test_nested_filters_match_set_algebra_over_simple", "test_default_mode_scores_are_cosine_like_simple",
    "test_node_ids_and_doc_ids_restrict", "test_hybrid_and_sparse_use_the_keyword_index", "test_mmr_diversifies",
    "test_get_delete_and_clear", "test_same_id_again_is_a_new_version", "test_async_runs_off_the_event_loop",
    "test_nodes_without_embeddings_are_refused_whole", "test_embed_missing_uses_the_cube_embedder",
    "test_wrong_dimension_is_refused", "test_unsupported_filters_are_clear_errors", "test_bad_queries_are_clear_errors",
]
# not run remotely: test_namespaces_and_users_are_separate binds user_id="u1", which a key for alice may not
# act as (covered below by test_llama_index_keys_name_the_user); test_every_operator_is_covered has no cube
for _name in _REMOTE_LI:
    globals()[f"{_name}_remote"] = getattr(li_suite, _name)


# the LlamaIndex retriever and embedding from the memory suite, unchanged, on a remote cube
for _name in ("test_retriever_async_and_chunks_come_back_as_written", "test_retriever_bad_input",
              "test_embedding_matches_the_cube"):
    globals()[f"{_name}_remote"] = getattr(li_memory_suite, _name)


def test_llama_index_retriever_returns_memories_with_metadata(service: Service) -> None:
    """The memory suite's retriever test; bob's memory lives in his own cube (alice's key cannot file it)."""
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    from memos_integrations.llama_index import MemOSRetriever as LlamaRetriever

    with service.cube("bob") as bobs:
        bobs.add(memory="Bob prefers aisle seats.")
    with service.cube() as cube:
        cube.add(memory="Alice prefers window seats.", kind="preference", metadata={"src": "chat"})
        hits = LlamaRetriever.from_defaults(cube, user_id="alice").retrieve("where does she like to sit?")
        assert [h.node.text for h in hits] == ["Alice prefers window seats."]
        meta = hits[0].node.metadata
        assert meta["kind"] == "preference" and meta["user_id"] == "alice" and meta["src"] == "chat"
        assert meta["version"] == 1 and "dense" in meta["ranks"] and hits[0].node.node_id == meta["memory_id"]
        flt = MetadataFilters(filters=[MetadataFilter(key="src", value="email")])
        assert LlamaRetriever.from_defaults(cube, filters=flt).retrieve("seats") == []
        with pytest.raises(AccessDeniedError):  # the key names the user
            LlamaRetriever.from_defaults(cube, user_id="bob").retrieve("seats")
        with pytest.raises(InvalidInputError, match="no field"):  # several users: the route has no field for it
            LlamaRetriever.from_defaults(cube, user_id=["alice", "bob"]).retrieve("seats")


def test_llama_index_store_is_the_remote_one(cube: RemoteCube) -> None:
    assert type(LlamaStore.from_defaults(cube=cube)) is RemoteLlamaStore
    assert type(LlamaStore(cube)) is RemoteLlamaStore


# -- what a service adds: keys name the user -----------------------------------------------------------

def test_langchain_keys_name_the_user_and_refusals_are_audited(fake_service: Service) -> None:
    owner = fake_service.cube("bob")
    shared = owner.cube_id
    fake_service.mos.share_cube_with_user(shared, "alice", "write", user_id="bob")
    emb = DeterministicFakeEmbedding(size=6)
    bobs = LangChainStore(owner, emb)
    bobs.add_texts(["bob's secret"], ids=["b1"])
    with fake_service.cube("alice", cube_id=shared) as mine:
        alices = LangChainStore(mine, emb)
        assert alices.get_by_ids(["b1"]) == []  # like a missing id
        assert alices.similarity_search("bob's secret", k=5) == []
        assert alices.delete(["b1"]) is False  # skipped as if absent
        with pytest.raises(AccessDeniedError, match="not available") as refused:
            alices.add_texts(["mine now"], ids=["b1"])
        assert "bob" not in str(refused.value)
        with pytest.raises(AccessDeniedError):  # the body cannot name another user
            LangChainStore(mine, emb, user_id="bob").get_by_ids(["b1"])
    assert bobs.get_by_ids(["b1"])[0].page_content == "bob's secret"
    denied = [e for e in fake_service.mos.cube(shared, user_id="bob").audit_log(50) if not e["allowed"]]
    assert {e["action"] for e in denied} >= {"langchain.vectorstore:delete", "langchain.vectorstore:write"}
    with fake_service.cube("alice", cube_id=shared) as mine:  # an unshared cube is not found at all
        fake_service.mos.unshare_cube(shared, "alice", user_id="bob")
        with pytest.raises(Exception) as gone:
            LangChainStore(mine, emb).get_by_ids(["b1"])
        assert type(gone.value).__name__ == "CubeNotFoundError"
    owner.close()


def test_llama_index_keys_name_the_user(service: Service) -> None:
    owner = service.cube("bob")
    service.mos.share_cube_with_user(owner.cube_id, "alice", "write", user_id="bob")
    node = li_suite.make_nodes()[0]
    LlamaStore(owner).add([node])
    with service.cube("alice", cube_id=owner.cube_id) as mine:
        alices = LlamaStore(mine)
        assert alices.get_nodes(["n0"]) == []  # her n0 is another item than bob's
        alices.delete_nodes(["n0"])
        alices.clear()
        with pytest.raises(AccessDeniedError):
            LlamaStore(mine, user_id="bob").get_nodes(["n0"])
    assert [n.node_id for n in LlamaStore(owner).get_nodes(["n0"])] == ["n0"]
    keys = KeyStore.open(service.mos.home)
    try:  # the refusal to act as bob is in the key audit log
        assert any(e["action"] == "act_as" and not e["allowed"] and e["target"] == "bob" for e in keys.audit_log(50))
    finally:
        keys.close()
    owner.close()


# -- embedding space and hostile input ----------------------------------------------------------------

def test_another_embedder_is_refused(service: Service) -> None:
    with service.cube() as cube:
        with pytest.raises(EmbedderMismatchError):
            LangChainStore(cube, DeterministicFakeEmbedding(size=384))
    with service.cube(embedder=DeterministicFakeEmbedding(size=384)) as cube:
        with pytest.raises(EmbedderMismatchError):
            LangChainStore(cube)
        with pytest.raises(EmbedderMismatchError):
            LlamaStore(cube)


def test_hostile_vectors_are_clear_errors_and_write_nothing(service: Service) -> None:
    with service.cube() as cube:
        lc, li = LangChainStore(cube), LlamaStore(cube)
        with pytest.raises(EmbedderMismatchError):
            lc.similarity_search_by_vector([0.1] * 8)
        nan = [float("nan")] + [0.1] * 383
        with pytest.raises(InvalidInputError, match="NaN"):
            lc.similarity_search_by_vector(nan)
        with pytest.raises(InvalidInputError, match="NaN"):
            li.add([TextNode(id_="x", text="x", embedding=nan)])
        with pytest.raises(InvalidInputError, match="NaN"):
            li.query(VectorStoreQuery(query_embedding=nan, similarity_top_k=1))
        with pytest.raises(InvalidInputError, match="mmr_threshold"):
            li.query(VectorStoreQuery(query_embedding=[0.1] * 384, similarity_top_k=1, mode="mmr", mmr_threshold=7.0))
        assert lc.add_texts([]) == [] and li.add([]) == []
        assert cube.stats()["items"] == 0


def test_duplicate_ids_in_one_batch_behave_as_locally(service: Service, tmp_path: Path, embedder: Any) -> None:
    from memos_integrations import MemCube

    local = MemCube.init_from_dir(tmp_path / "cube", embedder=embedder)
    outcomes: list[tuple[str, Any]] = []
    with service.cube() as remote:
        for cube in (local, remote):
            store = LangChainStore(cube)
            try:
                store.add_texts(["one", "two"], ids=["d", "d"])
                outcomes.append(("ok", sorted(d.page_content for d in store.get_by_ids(["d"]))))
            except InvalidInputError as exc:
                outcomes.append(("refused", type(exc).__name__))
    local.close()
    assert outcomes[0] == outcomes[1]


def test_a_write_over_the_body_limit_is_batched_and_one_huge_item_is_refused(service: Service) -> None:
    rng = np.random.default_rng(3)
    nodes = [TextNode(id_=f"b{i}", text=f"node {i}", embedding=rng.normal(size=384).tolist()) for i in range(40)]
    with service.cube() as cube:
        li = LlamaStore(cube)
        assert li.add(nodes) == [n.node_id for n in nodes]  # ~8 KB a node: several requests
        assert len(li.get_nodes(filters=None)) == 40
        lc = LangChainStore(cube)
        texts = [f"document {i} " + "x" * 4000 for i in range(40)]
        ids = lc.add_texts(texts, ids=[f"t{i}" for i in range(40)])
        assert len(lc.get_by_ids(ids)) == 40
        with pytest.raises(OversizedInputError, match="body limit"):
            lc.add_texts(["y" * (BODY_LIMIT + 10)])
        before = cube.stats()["items"]
        with pytest.raises(AccessDeniedError):  # a batched write checks every id before its first request
            LangChainStore(cube, kind="fact").add_texts(texts[:30], ids=[f"new{i}" for i in range(29)] + ["t0"])
        assert cube.stats()["items"] == before


async def test_async_twins_return_what_the_sync_methods_return(fake_service: Service) -> None:
    with fake_service.cube() as cube:
        store = LangChainStore(cube, DeterministicFakeEmbedding(size=6))
        ids = await store.aadd_documents([Document("tea", metadata={"t": 1}), Document("coffee", metadata={"t": 2})])
        assert [d.page_content for d in await store.aget_by_ids(ids)] == [d.page_content for d in store.get_by_ids(ids)]
        assert (await store.asimilarity_search("tea", k=1, filter={"t": 1}))[0].page_content == "tea"
        assert [d.page_content for d in await store.amax_marginal_relevance_search("tea", k=2, fetch_k=2)] == \
            [d.page_content for d in store.max_marginal_relevance_search("tea", k=2, fetch_k=2)]
        assert await store.adelete(ids) is True
