"""``MemOSPropertyGraphStore``: LlamaIndex's property graph on the cube's embedded graph.

Where it sits: a ``PropertyGraphStore`` whose nodes are cube items and whose relations are rows of
the cube's ``edges`` table (the same graph the cube's own search expands along). Entity nodes become
items of kind ``fact`` (text: the entity name), chunk nodes items of kind ``chunk``. Node ids (entity
names) are keys within (namespace, user): another user's ``Acme`` or another namespace's is another
item, and a graph and a vector store over the same chunks never overwrite each other (see
``_nodes.ScopedKeys``; graphs written before keys were scoped, ``pg:<namespace>:<id>``, are still read
and updated in place). Properties are the item metadata, so ``get(properties=...)`` runs as SQL.
``vector_query`` uses the cube's dense search over the entity nodes, leaving out the endpoints
``upsert_relations`` had to create (LlamaIndex's stores keep those without an embedding). The
embedded SQLite graph speaks no Cypher: ``structured_query`` raises :class:`StructuredQueryUnsupportedError`.

Who is acting: the ``user_id`` binding, else the user a LangGraph run's context names. Sync/async:
the core is synchronous; every ``a*`` method runs it in a worker thread.

Semantics where LlamaIndex's stores differ: ``properties`` match when every given key/value matches
(Neo4j's reading); ``delete`` removes the named entities, relation types, and nodes independently,
each node with its relations (``DETACH DELETE``); ``get_rel_map`` does not walk ignored relations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llama_index.core.graph_stores.types import (
    ChunkNode,
    EntityNode,
    LabelledNode,
    PropertyGraphStore,
    Relation,
    Triplet,
)
from llama_index.core.vector_stores.types import VectorStoreQuery

from ..aio import in_thread
from ..errors import InvalidInputError, InvalidTypeError, MemosError
from ..face_api import CubeAPI, as_cube
from ..items import Edge, Kind, MemoryItem
from ..textual.filters import MemoryFilter
from ._nodes import (
    NOT_DELETED,
    ScopedKeys,
    acting_user,
    check_embed_model,
    cosine_scores,
    embeddings_of,
    plan_of,
    query_vector,
)
from .filters import combine, to_memory_metadata

_INFO = "_pg"  # the metadata key holding what LlamaIndex needs to rebuild the node
#: entities upsert_relations created for endpoints it had not seen: never returned by vector_query
_NOT_PLACEHOLDER = {"$not": {f"{_INFO}.placeholder": True}}


class StructuredQueryUnsupportedError(MemosError, NotImplementedError):
    """The cube's graph backend cannot run structured (Cypher) queries."""


class MemOSPropertyGraphStore(PropertyGraphStore):
    """A LlamaIndex property graph store in a memory cube.

    Example:
        >>> import tempfile
        >>> from llama_index.core.graph_stores.types import EntityNode, Relation
        >>> from memos_integrations import MemCube
        >>> cube = MemCube.init_from_dir(tempfile.mkdtemp() + "/cube")
        >>> graph = MemOSPropertyGraphStore.from_defaults(cube, user_id="alice")
        >>> graph.upsert_nodes([EntityNode(name="Alice", label="PERSON"), EntityNode(name="Acme", label="ORG")])
        >>> graph.upsert_relations([Relation(label="WORKS_AT", source_id="Alice", target_id="Acme")])
        >>> [(s.id, r.label, o.id) for s, r, o in graph.get_triplets(entity_names=["Alice"])]
        [('Alice', 'WORKS_AT', 'Acme')]
        >>> MemOSPropertyGraphStore.from_defaults(cube, user_id="bob").get_triplets(entity_names=["Alice"])
        []
        >>> cube.close()
    """

    supports_vector_queries: bool = True

    @property
    def supports_structured_queries(self) -> bool:  # type: ignore[override]
        """Whether the cube's graph backend runs Cypher (its ``supports_cypher`` capability)."""
        return bool(getattr(self._graph, "supports_cypher", False))

    def __init__(self, cube: Any, namespace: str = "default", user_id: str | None = None, embed_model: Any = None) -> None:
        if not isinstance(namespace, str) or not namespace or ":" in namespace:
            raise InvalidInputError(f"namespace must be a non-empty string without ':', got {namespace!r}")
        self._cube: CubeAPI = as_cube(cube, "MemOSPropertyGraphStore")
        check_embed_model(self._cube, embed_model, "MemOSPropertyGraphStore")
        self.namespace = namespace
        self.user_id = user_id

    @classmethod
    def from_defaults(cls, cube: Any, namespace: str = "default", user_id: str | None = None,
                      embed_model: Any = None) -> MemOSPropertyGraphStore:
        """The graph of ``user_id`` (None: of no user) in ``namespace``; ``embed_model`` is checked against the cube's."""
        return cls(cube, namespace=namespace, user_id=user_id, embed_model=embed_model)

    @property
    def client(self) -> Any:
        """The cube."""
        return self._cube

    @property
    def _graph(self) -> Any:
        """The cube's graph backend (the ``edges`` table of the embedded engine)."""
        return self._cube.text_mem.graph

    def scope_keys(self) -> ScopedKeys:
        """The keys of whoever is acting now (the binding, else a run's context)."""
        return ScopedKeys("graph", self.namespace, acting_user(self.user_id, self._cube, "MemOSPropertyGraphStore"))

    def item_id(self, node_id: str) -> str:
        """The cube item a node id (an entity name) of this graph is kept as, for ``cube.history``."""
        return self.scope_keys().resolve(self._cube, [self._check_id(node_id)])[node_id]

    # -- id and node mapping --------------------------------------------------------------------
    @staticmethod
    def _check_id(node_id: Any) -> str:
        if not isinstance(node_id, str):
            raise InvalidTypeError(f"graph node ids are strings, got {type(node_id).__name__}")
        return node_id

    @staticmethod
    def _to_item(node: LabelledNode, keys: ScopedKeys, item_id: str, placeholder: bool = False) -> MemoryItem:
        if not isinstance(node, (EntityNode, ChunkNode)):
            raise InvalidTypeError(f"graph nodes are EntityNode or ChunkNode, got {type(node).__name__}")
        props = dict(node.properties)
        if isinstance(node, EntityNode):
            info: dict[str, Any] = {"type": "entity", "label": node.label, "name": node.name}
            kind, text, sub = Kind.FACT, node.name, "entity"
        elif isinstance(node, ChunkNode):
            info = {"type": "chunk", "label": node.label, "id": node.id}
            kind, text, sub = Kind.CHUNK, node.text, "chunk"
        if placeholder:
            info["placeholder"] = True
        ref = props.get("ref_doc_id")
        tag = keys.tag if item_id == keys.item_id(node.id) else keys.legacy_tag  # an earlier row keeps its tag
        return MemoryItem(
            id=item_id, text=text, kind=kind, user_id=keys.user_id, tags=[tag, sub],
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

    def _items(self, keys: ScopedKeys, ids: Sequence[str] | None = None, metadata: dict[str, Any] | None = None,
               sub: str | None = None, states: Any = None) -> list[MemoryItem]:
        """This scope's items: of the node ids ``ids`` if given, with ``metadata``, of kind tag ``sub``."""
        kw: dict[str, Any] = {} if states is None else {"states": states}
        if ids is not None:
            ids = [self._check_id(i) for i in ids]
        flt = keys.filter(ids, tags_all=[sub] if sub else None, metadata=metadata, **kw)
        items: list[MemoryItem] = self._cube.text_mem.list_items(flt)
        return items

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
        return [self._to_node(it) for it in self._items(self.scope_keys(), ids, self._props(properties))]

    def _edges_in_scope(self, keys: ScopedKeys, relation_names: list[str] | None) -> list[Edge]:
        """Edges leaving this scope's nodes (and the nodes of an earlier, unscoped graph of the namespace)."""
        return self._cube.store.edges_from_prefixes([keys.item_id(""), keys.legacy_id("")], relation_names or None)

    def _item_ids(self, keys: ScopedKeys, node_ids: Sequence[str]) -> list[str]:
        """The items of ``node_ids`` in this scope (to walk the graph from)."""
        return [it.id for it in self._items(keys, list(node_ids), states=NOT_DELETED)]

    def _triplets(self, keys: ScopedKeys, edges: Sequence[Edge]) -> list[Triplet]:
        """``edges`` as triplets, keeping those whose both ends are live nodes of this scope."""
        ids = sorted({e.src for e in edges} | {e.dst for e in edges})
        live: dict[str, MemoryItem] = {}
        if ids:
            flt = MemoryFilter(user_id=keys.user_id, tags_any=[keys.tag, keys.legacy_tag], ids=ids)
            live = {it.id: it for it in self._cube.text_mem.list_items(flt)}
        nodes = {i: self._to_node(it) for i, it in live.items()}
        return [
            (nodes[e.src], Relation(label=e.type, source_id=nodes[e.src].id, target_id=nodes[e.dst].id,
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
        """Triplets touching ``entity_names`` / ``ids``, of ``relation_names``, with ``properties``; [] for no filter.

        Args:
            entity_names: entity names a triplet's subject or object must be among.
            relation_names: relation labels to keep.
            properties: key/values a triplet's subject, relation or object must carry (each one by any of them).
            ids: node ids a triplet's subject or object must be among.

        Returns:
            ``(subject, relation, object)`` triplets of this scope's graph.
        """
        props = self._props(properties)
        if not (entity_names or relation_names or props or ids):
            return []
        keys = self.scope_keys()
        anchors = [set(x) for x in (entity_names, ids) if x]
        if anchors:
            seeds = self._item_ids(keys, sorted(anchors[0]))
            edges = self._graph.edges(seeds, "both", relation_names or None) if seeds else []
        else:
            edges = self._edges_in_scope(keys, relation_names)
        out = []
        for t in self._triplets(keys, edges):
            if any(t[0].id not in a and t[2].id not in a for a in anchors):
                continue
            if props and not all(any(x.properties.get(k) == v for x in t) for k, v in props.items()):
                continue
            out.append(t)
        return out

    def get_rel_map(
        self, graph_nodes: list[LabelledNode], depth: int = 2, limit: int = 30, ignore_rels: list[str] | None = None
    ) -> list[Triplet]:
        """Triplets within ``depth`` hops of ``graph_nodes`` (breadth first, at most ``limit``).

        Args:
            graph_nodes: the nodes to start from (only this scope's are walked).
            depth: how many hops to walk (0: none).
            limit: the most triplets to return.
            ignore_rels: relation labels neither returned nor walked.

        Returns:
            The triplets found, nearest first.
        """
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise InvalidInputError(f"depth must be a non-negative integer, got {depth!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidInputError(f"limit must be a non-negative integer, got {limit!r}")
        keys = self.scope_keys()
        ignore = set(ignore_rels or [])
        frontier = set(self._item_ids(keys, [n.id for n in graph_nodes])) if graph_nodes else set()
        visited = set(frontier)
        seen: set[tuple[str, str, str]] = set()
        found: list[Edge] = []
        for _ in range(depth):
            if not frontier or len(found) >= limit:
                break
            nxt: set[str] = set()
            hop = [e for e in self._graph.edges(sorted(frontier), "both")
                   if e.type not in ignore and (e.src, e.type, e.dst) not in seen]
            ends = sorted({x for e in hop for x in (e.src, e.dst)} - visited)
            if ends:  # walk only into this scope's live nodes
                flt = MemoryFilter(user_id=keys.user_id, tags_any=[keys.tag, keys.legacy_tag], ids=ends)
                inside = visited | {it.id for it in self._cube.text_mem.list_items(flt)}
            else:
                inside = visited
            for e in hop:
                if e.src not in inside or e.dst not in inside or (e.src, e.type, e.dst) in seen:
                    continue
                seen.add((e.src, e.type, e.dst))
                found.append(e)
                nxt.update(x for x in (e.src, e.dst) if x not in visited)
            visited |= nxt
            frontier = nxt
        return self._triplets(keys, found)[:limit]

    def vector_query(self, query: VectorStoreQuery, **kwargs: Any) -> tuple[list[LabelledNode], list[float]]:
        """Entity nodes nearest to ``query.query_embedding`` (cosine), with the query's filters.

        Endpoints ``upsert_relations`` created (named only by an id) are left out, as LlamaIndex's own
        stores keep them without an embedding.
        """
        if query.query_embedding is None:
            raise InvalidInputError("vector_query needs query.query_embedding; embed the query first")
        qvec = query_vector(self._cube, query.query_embedding, "MemOSPropertyGraphStore.vector_query")
        keys = self.scope_keys()
        node_ids = [self._check_id(i) for i in query.node_ids] if query.node_ids else None
        flt = keys.filter(node_ids, tags_all=["entity"],
                          metadata=combine(to_memory_metadata(query.filters), _NOT_PLACEHOLDER))
        k = max(int(query.similarity_top_k), 1)
        plan = plan_of(name="llama_index.graph", keyword=False, time_aware=False, candidates=k)
        hits = self._cube.search("", filter=flt, top_k=k, plan=plan, query_vector=qvec)
        sims = cosine_scores(self._cube, [h.item.id for h in hits], qvec)
        return [self._to_node(h.item) for h in hits], [sims.get(h.item.id, 0.0) for h in hits]

    def structured_query(self, query: str, param_map: dict[str, Any] | None = None) -> Any:
        """A read-only Cypher query, where the cube's graph backend runs Cypher (``supports_cypher``)."""
        if getattr(self._graph, "supports_cypher", False):
            return self._graph.cypher(query, dict(param_map or {}))
        raise StructuredQueryUnsupportedError(
            f"cube {self._cube.cube_id!r} keeps its graph in embedded SQLite, which runs no Cypher "
            f"(graph.supports_cypher={getattr(self._graph, 'supports_cypher', False)}); use get_triplets, "
            "get_rel_map or vector_query, or configure a Cypher graph backend for structured queries"
        )

    def get_schema(self, refresh: bool = False) -> dict[str, Any]:
        """Node labels and relation types present (a summary; there is no typed schema to enforce)."""
        keys = self.scope_keys()
        labels = {(it.metadata.get(_INFO) or {}).get("label") for it in self._items(keys)}
        rels = {t[1].label for t in self._triplets(keys, self._edges_in_scope(keys, None))}
        return {"node_labels": sorted(x for x in labels if x), "relation_types": sorted(rels)}

    # -- writes ---------------------------------------------------------------------------------
    def upsert_nodes(self, nodes: Sequence[LabelledNode]) -> None:
        """Write nodes (a known id gets a new version); embeddings are used as given, else computed."""
        self._upsert(list(nodes), placeholder=False)

    def _upsert(self, nodes: list[Any], placeholder: bool) -> None:
        if not nodes:
            return
        for n in nodes:
            if not isinstance(n, (EntityNode, ChunkNode)):
                raise InvalidTypeError(f"graph nodes are EntityNode or ChunkNode, got {type(n).__name__}")
        # PropertyGraphIndex sends an entity once per chunk that mentions it: the last one wins, as in
        # SimplePropertyGraphStore (one write may not name an item twice)
        nodes = list({self._check_id(n.id): n for n in nodes}.values())
        keys = self.scope_keys()
        ids = keys.resolve(self._cube, [n.id for n in nodes])
        items = [self._to_item(n, keys, ids[n.id], placeholder) for n in nodes]
        cube = self._cube
        vectors = embeddings_of(nodes, cube.embedder.dimension, True, cube.embedder.embed_documents,
                                [it.index_text for it in items])
        cube.add_items(items, vectors=vectors)

    def upsert_relations(self, relations: list[Relation]) -> None:
        """Write relations; an endpoint not yet in the graph is created as an entity named by its id."""
        checked = []
        for r in relations:
            if not isinstance(r, Relation):
                raise InvalidTypeError(f"expected Relation, got {type(r).__name__}")
            if not r.label or not r.source_id or not r.target_id:
                raise InvalidInputError(f"a relation needs a label, source_id and target_id: {r!r}")
            try:
                json.dumps(r.properties, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"relation {r.label!r} properties must be JSON: {exc}") from None
            checked.append(r)
        if not checked:
            return
        keys = self.scope_keys()
        names = sorted({self._check_id(x) for r in checked for x in (r.source_id, r.target_id)})
        have = {self._to_node(it).id for it in self._items(keys, names, states=NOT_DELETED)}
        missing = [EntityNode(name=n) for n in names if n not in have]
        if missing:  # placeholders: found by get and walked, but never returned by vector_query
            self._upsert(missing, placeholder=True)
        ids = keys.resolve(self._cube, names)
        self._graph.add_edges(
            [Edge(ids[r.source_id], ids[r.target_id], r.label, 1.0, dict(r.properties)) for r in checked])

    def delete(
        self,
        entity_names: list[str] | None = None,
        relation_names: list[str] | None = None,
        properties: dict | None = None,
        ids: list[str] | None = None,
    ) -> None:
        """Delete entities by name, relations by type, and nodes by id or properties (with their relations).

        Args:
            entity_names: entities to delete, each with its relations.
            relation_names: relation labels whose relations (of this scope) are deleted.
            properties: nodes carrying all of these key/values are deleted, with their relations.
            ids: node ids to delete, each with its relations.
        """
        props = self._props(properties)
        keys = self.scope_keys()
        doomed: set[str] = set()
        if entity_names:
            doomed |= {it.id for it in self._items(keys, list(entity_names), sub="entity", states=NOT_DELETED)}
        if ids or props:
            doomed |= {it.id for it in self._items(keys, ids or None, props, states=NOT_DELETED)}
        rel_edges = self._edges_in_scope(keys, list(relation_names)) if relation_names else []
        mine = {it.id for it in self._items(keys, states=NOT_DELETED)} if rel_edges else set()
        store = self._cube.store
        with store.transaction():  # relations and tombstones commit together
            for e in rel_edges:
                if e.src in mine:  # an earlier, unscoped graph shares its prefix among users
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
