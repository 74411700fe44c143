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
import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

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


class PostgresStoreConfig(_Strict):
    """The truth in one schema of a PostgreSQL database (many cubes may share the database).

    cube.json records ``dsn`` *without* its password: a password given in the DSN is kept in memory for
    this session only; on reopening, libpq finds it (``PGPASSWORD``, ``PGSERVICE`` + service file,
    ``~/.pgpass``), or pass the config again. Build it with :func:`postgres_store`.
    """

    backend: Literal["postgres"] = "postgres"
    dsn: str = Field(description="libpq URI (postgresql://user@host:5432/db) or key=value string; "
                                 "a password in it is never written")
    schema_name: str = Field(default_factory=lambda: f"cube_{secrets.token_hex(5)}",
                             pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="the cube's schema (created if missing)")
    vectors: Literal["pgvector", "chroma"] = Field(
        "pgvector", description="pgvector: the vectors in the same schema (the default vector config); "
                                "chroma: as CubeConfig.vector says")
    min_size: int = Field(1, ge=0, le=1000, description="pooled connections kept open per process")
    max_size: int = Field(5, ge=1, le=1000, description="pooled connections at most per process")
    pool_timeout: float = Field(10.0, gt=0, le=3600, description="seconds to wait for a free connection")
    _password_dsn: str | None = PrivateAttr(None)

    def model_post_init(self, __context: Any) -> None:
        from .storage.postgres import redact

        public = redact(self.dsn)
        if public != self.dsn:  # keep the secret for this session, out of every dump
            self._password_dsn = self.dsn
            object.__setattr__(self, "dsn", public)

    def connection_dsn(self) -> str:
        """The DSN to connect with (the one given, password included, in the session that gave it)."""
        return self._password_dsn or self.dsn


#: The store configurations a cube accepts (one model per ``backend``).
StoreConfig = Annotated[SQLiteStoreConfig | PostgresStoreConfig, Field(discriminator="backend")]


class VectorConfig(_Strict):
    """Where the derived vector index lives."""

    backend: Literal["chroma", "pgvector"] = Field(
        "chroma", description="chroma; pgvector: in the cube's PostgreSQL schema (needs the postgres store)")
    mode: Literal["persistent", "http"] = Field(
        "persistent", description="persistent: <cube>/vectors (one process); http: on a server, shareable "
        "(a Chroma server, or pgvector in the store's PostgreSQL)"
    )
    host: str = "localhost"
    port: int = 8000
    ssl: bool = False
    collection: str | None = Field(None, description="collection name; defaults to the cube id")
    @model_validator(mode="before")
    @classmethod
    def _pgvector_is_a_server(cls, data: Any) -> Any:
        """pgvector lives on the store's server: shareable by many processes (no exclusive hold)."""
        if isinstance(data, dict) and data.get("backend") == "pgvector":
            if data.get("mode", "http") != "http":
                raise ValueError("pgvector's vectors are on the PostgreSQL server: mode must be 'http'")
            data = {**data, "mode": "http"}
        return data

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

    @model_validator(mode="before")
    @classmethod
    def _vectors_beside_postgres(cls, data: Any) -> Any:
        """A PostgreSQL store keeps its vectors in pgvector unless a vector config is given."""
        if isinstance(data, dict) and data.get("vector") is None:
            store = data.get("store")
            get = store.get if isinstance(store, dict) else (lambda k, d=None: getattr(store, k, d))
            if get("backend") == "postgres" and get("vectors", "pgvector") == "pgvector":
                data = {**data, "vector": VectorConfig(backend="pgvector", mode="http")}
        return data

    @model_validator(mode="after")
    def _pgvector_needs_postgres(self) -> CubeConfig:
        if self.vector.backend == "pgvector" and self.store.backend != "postgres":
            raise ValueError("pgvector keeps the vectors in the cube's PostgreSQL schema: use "
                             "store=postgres_store(dsn), or the chroma vector backend")
        return self

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


def postgres_store(dsn: str, schema: str | None = None, vectors: Literal["pgvector", "chroma"] = "pgvector",
                   **pool: Any) -> PostgresStoreConfig:
    """The store config for a cube in PostgreSQL: ``CubeConfig(store=postgres_store("postgresql://app@db/memory"))``.

    Args:
        dsn: a libpq URI or key=value string. Leave the password out (libpq reads ``PGPASSWORD``, a
            service file or ``~/.pgpass``); one given here is used for this session and never written.
        schema: the cube's schema (lower-case letters, digits, ``_``); None: a new ``cube_<random>``
            one, recorded in cube.json. One database holds many cubes, one schema each.
        vectors: ``"pgvector"`` (the default: the server holds everything) or ``"chroma"`` (give
            ``CubeConfig(vector=...)`` too, e.g. a Chroma server).
        **pool: ``min_size``, ``max_size``, ``pool_timeout`` of the connection pool.

    Returns:
        The store configuration (pass it as ``CubeConfig(store=...)``).
    """
    fields: dict[str, Any] = {"dsn": dsn, "vectors": vectors, **pool}
    if schema is not None:
        fields["schema_name"] = schema
    return PostgresStoreConfig(**fields)


def secret(env_name: str) -> str | None:
    """Read a secret from the environment at the moment a client is built."""
    return os.environ.get(env_name)
