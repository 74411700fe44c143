"""``MemOSPropertyGraphStore``: LlamaIndex's property graph on the cube's embedded graph.

Where it sits: a ``PropertyGraphStore`` whose nodes are cube items and whose relations are rows of
the cube's ``edges`` table (the same graph the cube's own search expands along). Entity nodes become
items of kind ``fact`` (text: the entity name), chunk nodes items of kind ``chunk``; item ids are
``pg:<namespace>:<node id>`` so a graph and a vector store over the same chunks never overwrite each
other. Properties are the item metadata, so ``get(properties=...)`` runs as SQL. ``vector_query``
uses the cube's dense search over the entity nodes. The embedded SQLite graph speaks no Cypher:
``structured_query`` raises :class:`StructuredQueryUnsupportedError`.

Semantics where LlamaIndex's stores differ: ``properties`` match when every given key/value matches
(Neo4j's reading); ``delete`` removes the named entities, relation types, and nodes independently,
each node with its relations (``DETACH DELETE``); ``get_rel_map`` does not walk ignored relations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from llama_index.core.graph_stores.types import (
    ChunkNode,
    EntityNode,
    LabelledNode,
    PropertyGraphStore,
    Relation,
    Triplet,
)
from llama_index.core.vector_stores.types import VectorStoreQuery

from ..errors import InvalidInputError, InvalidTypeError, MemosError
from ..items import Edge, Kind, MemoryItem
from ..textual.filters import MemoryFilter
from ._nodes import NOT_DELETED, cosine_scores, embeddings_of, in_thread, plan_of
from .filters import combine, to_memory_metadata

_INFO = "_pg"  # the metadata key holding what LlamaIndex needs to rebuild the node


class StructuredQueryUnsupportedError(MemosError, NotImplementedError):
    """The cube's graph backend cannot run structured (Cypher) queries."""


class MemOSPropertyGraphStore(PropertyGraphStore):
    """A LlamaIndex property graph store in a memory cube.

    Example:
        >>> import tempfile
        >>> from llama_index.core.graph_stores.types import EntityNode, Relation
        >>> from memos_integrations import MemCube
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> graph = MemOSPropertyGraphStore.from_defaults(cube)
        >>> graph.upsert_nodes([EntityNode(name="Alice", label="PERSON"), EntityNode(name="Acme", label="ORG")])
        >>> graph.upsert_relations([Relation(label="WORKS_AT", source_id="Alice", target_id="Acme")])
        >>> [(s.id, r.label, o.id) for s, r, o in graph.get_triplets(entity_names=["Alice"])]
        [('Alice', 'WORKS_AT', 'Acme')]
        >>> cube.close()
    """

    supports_structured_queries: bool = False
    supports_vector_queries: bool = True

    def __init__(self, cube: Any, namespace: str = "default", user_id: str | None = None) -> None:
        if not isinstance(namespace, str) or not namespace or ":" in namespace:
            raise InvalidInputError(f"namespace must be a non-empty string without ':', got {namespace!r}")
        self._cube = cube
        self.namespace = namespace
        self.user_id = user_id
        self.prefix = f"pg:{namespace}:"
        self.tag = f"llama_index:graph:{namespace}"

    @classmethod
    def from_defaults(cls, cube: Any, namespace: str = "default", user_id: str | None = None) -> MemOSPropertyGraphStore:
        return cls(cube, namespace=namespace, user_id=user_id)

    @property
    def client(self) -> Any:
        """The cube."""
        return self._cube

    # -- id and node mapping --------------------------------------------------------------------
    def _iid(self, node_id: str) -> str:
        if not isinstance(node_id, str):
            raise InvalidTypeError(f"graph node ids are strings, got {type(node_id).__name__}")
        return self.prefix + node_id

    def _nid(self, item_id: str) -> str:
        return item_id[len(self.prefix):]

    def _to_item(self, node: LabelledNode) -> MemoryItem:
        if not isinstance(node, (EntityNode, ChunkNode)):
            raise InvalidTypeError(f"graph nodes are EntityNode or ChunkNode, got {type(node).__name__}")
        props = dict(node.properties)
        if isinstance(node, EntityNode):
            info = {"type": "entity", "label": node.label, "name": node.name}
            kind, text, sub = Kind.FACT, node.name, "entity"
        elif isinstance(node, ChunkNode):
            info = {"type": "chunk", "label": node.label, "id": node.id}
            kind, text, sub = Kind.CHUNK, node.text, "chunk"
        ref = props.get("ref_doc_id")
        return MemoryItem(
            id=self._iid(node.id), text=text, kind=kind, user_id=self.user_id, tags=[self.tag, sub],
            metadata={**props, _INFO: info}, parent_id=ref if isinstance(ref, str) and ref != "None" else None,
            method="llama_index",
        )

    @staticmethod
    def _to_node(item: MemoryItem) -> LabelledNode:
        props = dict(item.metadata)
        info = props.pop(_INFO, {"type": "entity", "label": "entity", "name": item.text})
        if info["type"] == "chunk":
            return ChunkNode(text=item.text, id_=info["id"], label=info["label"], properties=props)
        return EntityNode(name=info["name"], label=info["label"], properties=props)

    def _scope(self, ids: Sequence[str] | None = None, metadata: dict[str, Any] | None = None,
               sub: str | None = None, states: Any = None) -> MemoryFilter:
        kw: dict[str, Any] = {} if states is None else {"states": states}
        return MemoryFilter(user_id=self.user_id, tags_all=[self.tag] + ([sub] if sub else []),
                            ids=None if ids is None else [self._iid(i) for i in ids], metadata=metadata, **kw)

    @staticmethod
    def _props(properties: dict | None) -> dict[str, Any] | None:
        if properties is None:
            return None
        if not isinstance(properties, dict):
            raise InvalidTypeError(f"properties must be a dict, got {type(properties).__name__}")
        return dict(properties) or None

    # -- reads ----------------------------------------------------------------------------------
    def get(self, properties: dict | None = None, ids: list[str] | None = None) -> list[LabelledNode]:
        """Nodes with all of ``properties`` and, if given, one of ``ids``; every node with neither."""
        items = self._cube.text_mem.list_items(self._scope(ids, self._props(properties)))
        return [self._to_node(it) for it in items]

    def _edges_in_scope(self, relation_names: list[str] | None) -> list[Edge]:
        sql = "SELECT src, dst, type, weight, metadata FROM edges WHERE substr(src, 1, ?) = ?"
        params: list[Any] = [len(self.prefix), self.prefix]
        if relation_names:
            sql += f" AND type IN ({','.join('?' * len(relation_names))})"
            params += list(relation_names)
        rows = self._cube.store.read(sql + " ORDER BY rowid", params)
        return [Edge(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def _triplets(self, edges: Sequence[Edge]) -> list[Triplet]:
        edges = [e for e in edges if e.src.startswith(self.prefix) and e.dst.startswith(self.prefix)]
        ids = sorted({e.src for e in edges} | {e.dst for e in edges})
        live = {it.id: it for it in self._cube.text_mem.list_items(self._scope([self._nid(i) for i in ids]))} if ids else {}
        nodes = {i: self._to_node(it) for i, it in live.items()}
        return [
            (nodes[e.src], Relation(label=e.type, source_id=self._nid(e.src), target_id=self._nid(e.dst),
                                    properties=dict(e.metadata)), nodes[e.dst])
            for e in edges if e.src in nodes and e.dst in nodes
        ]

    def get_triplets(
        self,
        entity_names: list[str] | None = None,
        relation_names: list[str] | None = None,
        properties: dict | None = None,
        ids: list[str] | None = None,
    ) -> list[Triplet]:
        """Triplets touching ``entity_names`` / ``ids``, of ``relation_names``, with ``properties``; [] for no filter."""
        props = self._props(properties)
        if not (entity_names or relation_names or props or ids):
            return []
        anchors = [set(x) for x in (entity_names, ids) if x]
        if anchors:
            seeds = [self._iid(n) for n in anchors[0]]
            edges = self._cube.graph.edges(seeds, "both", relation_names or None)
        else:
            edges = self._edges_in_scope(relation_names)
        out = []
        for t in self._triplets(edges):
            if any(t[0].id not in a and t[2].id not in a for a in anchors):
                continue
            if props and not all(any(x.properties.get(k) == v for x in t) for k, v in props.items()):
                continue
            out.append(t)
        return out

    def get_rel_map(
        self, graph_nodes: list[LabelledNode], depth: int = 2, limit: int = 30, ignore_rels: list[str] | None = None
    ) -> list[Triplet]:
        """Triplets within ``depth`` hops of ``graph_nodes`` (breadth first, at most ``limit``)."""
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise InvalidInputError(f"depth must be a non-negative integer, got {depth!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidInputError(f"limit must be a non-negative integer, got {limit!r}")
        ignore = set(ignore_rels or [])
        frontier = {self._iid(n.id) for n in graph_nodes}
        visited = set(frontier)
        seen: set[tuple[str, str, str]] = set()
        found: list[Edge] = []
        for _ in range(depth):
            if not frontier or len(found) >= limit:
                break
            nxt: set[str] = set()
            for e in self._cube.graph.edges(sorted(frontier), "both"):
                key = (e.src, e.type, e.dst)
                if e.type in ignore or key in seen or not (e.src.startswith(self.prefix) and e.dst.startswith(self.prefix)):
                    continue
                seen.add(key)
                found.append(e)
                nxt.update(x for x in (e.src, e.dst) if x not in visited)
            visited |= nxt
            frontier = nxt
        return self._triplets(found)[:limit]

    def vector_query(self, query: VectorStoreQuery, **kwargs: Any) -> tuple[list[LabelledNode], list[float]]:
        """Entity nodes nearest to ``query.query_embedding`` (cosine), with the query's filters."""
        if query.query_embedding is None:
            raise InvalidInputError("vector_query needs query.query_embedding; embed the query first")
        qvec = np.asarray(query.query_embedding, dtype=np.float32)
        if qvec.shape != (self._cube.embedder.dimension,):
            from ..errors import EmbedderMismatchError

            raise EmbedderMismatchError(
                f"query embedding has {qvec.size} dims, the cube's embedder {self._cube.embedder.dimension}"
            )
        qvec = qvec / max(float(np.linalg.norm(qvec)), 1e-12)
        flt = self._scope(query.node_ids, combine(to_memory_metadata(query.filters)), sub="entity")
        k = max(int(query.similarity_top_k), 1)
        plan = plan_of(name="llama_index.graph", keyword=False, time_aware=False, candidates=k)
        hits = self._cube.search("", filter=flt, top_k=k, plan=plan, query_vector=qvec)
        sims = cosine_scores(self._cube.store, [h.item.id for h in hits], qvec)
        return [self._to_node(h.item) for h in hits], [sims.get(h.item.id, 0.0) for h in hits]

    def structured_query(self, query: str, param_map: dict[str, Any] | None = None) -> Any:
        raise StructuredQueryUnsupportedError(
            f"cube {self._cube.cube_id!r} keeps its graph in embedded SQLite, which runs no Cypher "
            f"(graph.supports_cypher={getattr(self._cube.graph, 'supports_cypher', False)}); use get_triplets, "
            "get_rel_map or vector_query, or configure a Cypher graph backend for structured queries"
        )

    def get_schema(self, refresh: bool = False) -> dict[str, Any]:
        """Node labels and relation types present (a summary; there is no typed schema to enforce)."""
        labels = self._cube.store.read(
            "SELECT DISTINCT json_extract(metadata, '$._pg.label') FROM items WHERE substr(id, 1, ?) = ? AND state != 'deleted'",
            (len(self.prefix), self.prefix),
        )
        rels = self._cube.store.read(
            "SELECT DISTINCT type FROM edges WHERE substr(src, 1, ?) = ?", (len(self.prefix), self.prefix)
        )
        return {"node_labels": sorted(r[0] for r in labels if r[0]), "relation_types": sorted(r[0] for r in rels)}

    # -- writes ---------------------------------------------------------------------------------
    def upsert_nodes(self, nodes: Sequence[LabelledNode]) -> None:
        """Write nodes (a known id gets a new version); embeddings are used as given, else computed."""
        if not nodes:
            return
        # PropertyGraphIndex sends an entity once per chunk that mentions it: the last one wins, as in
        # SimplePropertyGraphStore (one write may not name an item twice)
        nodes = list({self._iid(getattr(n, "id", "")): n for n in nodes if isinstance(n, LabelledNode)}.values()) \
            if all(isinstance(n, LabelledNode) for n in nodes) else list(nodes)
        items = [self._to_item(n) for n in nodes]
        cube = self._cube
        vectors = embeddings_of(nodes, cube.embedder.dimension, True, cube.embedder.embed_documents,
                                [it.index_text for it in items])
        cube.add_items(items, vectors=vectors)

    def upsert_relations(self, relations: list[Relation]) -> None:
        """Write relations; an endpoint not yet in the graph is created as an entity named by its id."""
        edges = []
        for r in relations:
            if not isinstance(r, Relation):
                raise InvalidTypeError(f"expected Relation, got {type(r).__name__}")
            if not r.label or not r.source_id or not r.target_id:
                raise InvalidInputError(f"a relation needs a label, source_id and target_id: {r!r}")
            try:
                json.dumps(r.properties, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"relation {r.label!r} properties must be JSON: {exc}") from None
            edges.append(Edge(self._iid(r.source_id), self._iid(r.target_id), r.label, 1.0, dict(r.properties)))
        if not edges:
            return
        wanted = sorted({e.src for e in edges} | {e.dst for e in edges})
        have = set(self._cube.store.get_items(wanted))
        missing = [EntityNode(name=self._nid(i)) for i in wanted if i not in have]
        if missing:
            self.upsert_nodes(missing)
        self._cube.graph.add_edges(edges)

    def delete(
        self,
        entity_names: list[str] | None = None,
        relation_names: list[str] | None = None,
        properties: dict | None = None,
        ids: list[str] | None = None,
    ) -> None:
        """Delete entities by name, relations by type, and nodes by id or properties (with their relations)."""
        props = self._props(properties)
        doomed: set[str] = set()
        if entity_names:
            flt = self._scope(list(entity_names), sub="entity", states=NOT_DELETED)
            doomed |= {it.id for it in self._cube.text_mem.list_items(flt)}
        if ids or props:
            flt = self._scope(ids or None, props, states=NOT_DELETED)
            doomed |= {it.id for it in self._cube.text_mem.list_items(flt)}
        rel_edges = self._edges_in_scope(list(relation_names)) if relation_names else []
        store = self._cube.store
        with store.transaction():  # relations and tombstones commit together
            for e in rel_edges:
                store.remove_edges(e.src, e.dst, e.type)
            for i in sorted(doomed):
                store.remove_edges(src=i)
                store.remove_edges(dst=i)
            if doomed:
                self._cube.delete(sorted(doomed))

    # -- async: the same work in a worker thread ----------------------------------------------
    async def aget(self, properties: dict | None = None, ids: list[str] | None = None) -> list[LabelledNode]:
        return await in_thread(self.get, properties, ids)

    async def aget_triplets(
        self, entity_names: list[str] | None = None, relation_names: list[str] | None = None,
        properties: dict | None = None, ids: list[str] | None = None,
    ) -> list[Triplet]:
        return await in_thread(self.get_triplets, entity_names, relation_names, properties, ids)

    async def aget_rel_map(
        self, graph_nodes: list[LabelledNode], depth: int = 2, limit: int = 30, ignore_rels: list[str] | None = None
    ) -> list[Triplet]:
        return await in_thread(self.get_rel_map, graph_nodes, depth, limit, ignore_rels)

    async def aupsert_nodes(self, nodes: list[LabelledNode]) -> None:
        await in_thread(self.upsert_nodes, nodes)

    async def aupsert_relations(self, relations: list[Relation]) -> None:
        await in_thread(self.upsert_relations, relations)

    async def adelete(
        self, entity_names: list[str] | None = None, relation_names: list[str] | None = None,
        properties: dict | None = None, ids: list[str] | None = None,
    ) -> None:
        await in_thread(self.delete, entity_names, relation_names, properties, ids)

    async def avector_query(self, query: VectorStoreQuery, **kwargs: Any) -> tuple[list[LabelledNode], list[float]]:
        return await in_thread(self.vector_query, query, **kwargs)

    async def astructured_query(self, query: str, param_map: dict[str, Any] | None = None) -> Any:
        return self.structured_query(query, param_map)  # raises at once: nothing to run off the loop
