"""What a user configures about a cube, as pydantic models with named presets.

``CubeConfig`` is written to ``<cube>/cube.json`` when a cube is created. Secrets never are: a
configuration names the *environment variable* that holds a key or password (``api_key_env``,
``password_env``), and the value is read from the environment when a client is built.

Presets are module constants (``EMBEDDED``, ``chroma_server(...)``) rather than flags.

Backends: ``store``, ``vector`` and ``graph`` each name a backend (their ``backend`` field); the cube
builds it through the lazy table in :mod:`memos_integrations.storage.registry`, so adding a backend is
a registry entry plus its config model here (for the store: a member of a union discriminated by
``backend``), never a branch in the cube.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from .readers.config import ReaderConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbedderConfig(_Strict):
    """Which embedder a cube uses when none is passed in as an object."""

    provider: Literal["minilm", "sentence-transformers", "openai"] = Field(
        "minilm", description="minilm: the offline all-MiniLM-L6-v2 default; openai: any OpenAI-compatible API"
    )
    model: str | None = Field(None, description="model name or local path (provider specific)")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; None means the SDK default")
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the environment variable holding the key")
    dimensions: int | None = Field(None, description="requested output dimension, where the provider supports it")
    batch_size: int = Field(64, ge=1, le=4096)


class SQLiteStoreConfig(_Strict):
    """The embedded truth: ``<cube>/memory.db`` (the default; cube.json files without a ``store`` entry)."""

    backend: Literal["sqlite"] = "sqlite"


#: The store configurations a cube accepts. A new backend adds its model here as
#: ``Annotated[SQLiteStoreConfig | PostgresStoreConfig, Field(discriminator="backend")]``.
StoreConfig = SQLiteStoreConfig


class VectorConfig(_Strict):
    """Where the derived vector index lives."""

    backend: Literal["chroma"] = "chroma"
    mode: Literal["persistent", "http"] = Field(
        "persistent", description="persistent: <cube>/vectors; http: a Chroma server (chroma run)"
    )
    host: str = "localhost"
    port: int = 8000
    ssl: bool = False
    collection: str | None = Field(None, description="collection name; defaults to the cube id")
    #: Above this many candidate rows a dense search goes to the ANN index; at or below it the
    #: cube scores the candidates exactly from the vectors it keeps in SQLite (faster and exact).
    exact_search_max: int = Field(4096, ge=0, le=2**40)  # bounded: it becomes an SQL LIMIT


class GraphConfig(_Strict):
    """Where the graph lives: ``sqlite`` (the embedded graph, edges in the cube's own store) or ``neo4j``
    (the same edges projected onto a Bolt server, see :func:`neo4j_graph` and docs/neo4j.md)."""

    backend: Literal["sqlite", "neo4j"] = "sqlite"
    uri: str | None = None
    user: str = "neo4j"
    password_env: str = Field("MEMOS_NEO4J_PASSWORD", description="name of the environment variable holding the password")
    database: str | None = None
    namespace: str | None = Field(
        None, description="neo4j: keeps this cube's nodes apart from other cubes' on the server (neo4j_graph sets one)"
    )
    message_bytes: int = Field(
        2000, ge=256, description="neo4j: largest Bolt message sent (FalkorDB crashes above ~3 KB; raise it on Neo4j)"
    )
    # given in this process only (neo4j_graph(auth=..., driver=...)), never written to cube.json
    _password: str | None = PrivateAttr(None)
    _driver: Any = PrivateAttr(None)


class CubeConfig(_Strict):
    """The configuration of one cube.

    Example:
        >>> CubeConfig().vector.mode
        'persistent'
        >>> CubeConfig().store.backend
        'sqlite'
        >>> chroma_server(port=8123).vector.port
        8123
    """

    cube_id: str | None = Field(None, description="defaults to the directory name")
    store: StoreConfig = Field(default_factory=SQLiteStoreConfig, description="where the truth lives")
    embedder: EmbedderConfig = EmbedderConfig()
    vector: VectorConfig = VectorConfig()
    graph: GraphConfig = GraphConfig()
    max_text_chars: int = Field(
        32_000, ge=1,
        description="one memory item written as it is (add_items, update, the faces' documents): longer is "
        "rejected, not truncated; chat messages and cube.add texts go up to max_message_chars",
    )
    max_message_chars: int = Field(
        1_000_000, ge=1,
        description="a chat message or cube.add(memory=...) text: kept whole and, above max_text_chars, also "
        "indexed as parts of part_chars; longer is rejected (OversizedInputError)",
    )
    part_chars: int = Field(
        700, ge=50, description="size of the parts a long message is indexed by (MiniLM reads 256 tokens: ~700 chars of a log)"
    )
    query_chars: int = Field(
        2_000, ge=50,
        description="a longer query is searched as its last part and its rarest words within this size; "
        "queries have no length limit",
    )
    reader: Literal["fast"] | ReaderConfig = Field(
        "fast", description="fast: no LLM (one item per message); a ReaderConfig: the LLM reader (readers/), key never stored"
    )
    kv_budget_bytes: int | None = Field(
        None, ge=1, description="activation memory: bytes of KV cache kept in RAM before LRU spill to <cube>/kv"
    )
    kv_disk_budget_bytes: int | None = Field(
        None, ge=1, description="activation memory: bytes of spilled KV caches kept in <cube>/kv (oldest deleted first)"
    )
    max_resident_adapters: int | None = Field(
        None, ge=1, description="parametric memory: LoRA adapters kept loaded on the base model at once"
    )

    @field_validator("cube_id")
    @classmethod
    def _valid_id(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or len(value) > 128 or "/" in value):
            raise ValueError("cube_id must be 1-128 characters without '/'")
        return value

    def to_json_dict(self) -> dict[str, Any]:
        """What cube.json records: everything here, and by construction no secret values."""
        return self.model_dump(mode="json")


#: SQLite + persistent Chroma + offline MiniLM, all inside the cube directory.
EMBEDDED = CubeConfig()


def chroma_server(host: str = "localhost", port: int = 8000, **kw: Any) -> CubeConfig:
    """The embedded preset with vectors on a Chroma server (``chroma run --path DIR --port N``)."""
    return CubeConfig(vector=VectorConfig(mode="http", host=host, port=port), **kw)


def neo4j_graph(
    uri: str | None = None,
    auth: tuple[str, str] | None = None,
    database: str | None = None,
    *,
    driver: Any = None,
    namespace: str | None = None,
    message_bytes: int = 2000,
    password_env: str = "MEMOS_NEO4J_PASSWORD",
) -> GraphConfig:
    """The cube's graph projected onto a Bolt server (Neo4j 5; FalkorDB), for ``CubeConfig(graph=...)``.

    ``cube.json`` records the uri, user, database and namespace, never the password: it is used from
    ``auth`` in this process, and read from the environment variable ``password_env`` when the cube is
    opened again. See docs/neo4j.md.

    Args:
        uri: ``bolt://host:7687`` (or ``neo4j://``); may be None when ``driver`` is given.
        auth: ``(user, password)``.
        database: the Neo4j database; None for the server's default.
        driver: a ``neo4j.Driver`` to use instead of building one (this process only).
        namespace: keeps this cube apart on a shared server; default a fresh ``cube_<random>`` name.
        message_bytes: largest Bolt message the cube sends (2000 suits FalkorDB; raise it on Neo4j).
        password_env: the environment variable holding the password on reopen.

    Returns:
        A :class:`GraphConfig` with ``backend="neo4j"``.

    Example:
        >>> g = neo4j_graph("bolt://graph:7687", auth=("neo4j", "s3cret"), namespace="maya")
        >>> "s3cret" in CubeConfig(graph=g).model_dump_json()
        False
    """
    import secrets

    config = GraphConfig(
        backend="neo4j", uri=uri, user=auth[0] if auth else "neo4j", database=database,
        namespace=namespace or f"cube_{secrets.token_hex(6)}", message_bytes=message_bytes, password_env=password_env,
    )
    config._password = auth[1] if auth else None
    config._driver = driver
    return config


def secret(env_name: str) -> str | None:
    """Read a secret from the environment at the moment a client is built."""
    return os.environ.get(env_name)
