"""LlamaIndex nodes, filters and queries as JSON, both ways, for the vector store on a remote cube.

Where it sits: between the client's ``MemOSVectorStore`` over a ``RemoteCube`` and the service's routes
(:mod:`memos_integrations.server.routes_vectors`). Nodes use llama_index's own ``doc_to_json`` form;
reading one back builds only plain node classes (text, image, document; an ``IndexNode`` without its
``obj``), so a body can never make the service build an arbitrary object. Anything malformed is an
:class:`~memos_integrations.errors.InvalidInputError` that says which node.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode, Document, ImageDocument, ImageNode, IndexNode, TextNode
from llama_index.core.storage.docstore.utils import doc_to_json
from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQuery

from ..errors import InvalidFilterError, InvalidInputError, InvalidTypeError

_TYPES: dict[str, type[BaseNode]] = {cls.class_name(): cls for cls in (TextNode, ImageNode, IndexNode, Document, ImageDocument)}
_QUERY_FIELDS = frozenset(f.name for f in dataclasses.fields(VectorStoreQuery))


def nodes_to_json(nodes: Sequence[BaseNode]) -> list[dict[str, Any]]:
    out = []
    for n, node in enumerate(nodes):
        if not isinstance(node, BaseNode):
            raise InvalidInputError(f"expected LlamaIndex nodes; nodes[{n}] is a {type(node).__name__}")
        row = doc_to_json(node)
        row["__data__"].pop("obj", None)  # an IndexNode's object stays on this side
        out.append(row)
    return out


def nodes_from_json(rows: Sequence[Any]) -> list[BaseNode]:
    nodes = []
    for n, row in enumerate(rows):
        data = row.get("__data__") if isinstance(row, dict) else None
        cls = _TYPES.get(str(data.get("class_name"))) if isinstance(data, dict) else None
        if cls is None or not isinstance(data, dict):
            raise InvalidInputError(f"nodes[{n}] is not a text, image or document node in doc_to_json form")
        try:
            nodes.append(cls.from_dict({k: v for k, v in data.items() if k != "obj"}))
        except (ValueError, TypeError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
            raise InvalidInputError(f"nodes[{n}] is not a valid {cls.class_name()}: {str(exc)[:300]}") from None
    return nodes


def filters_to_json(filters: MetadataFilters | None) -> dict[str, Any] | None:
    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        raise InvalidTypeError(f"filters must be MetadataFilters, got {type(filters).__name__}")
    return filters.model_dump(mode="json", warnings=False)


def filters_from_json(data: dict[str, Any] | None) -> MetadataFilters | None:
    if data is None:
        return None
    try:
        return MetadataFilters.model_validate(data)
    except ValueError as exc:
        raise InvalidFilterError(f"filters are not valid MetadataFilters: {str(exc)[:300]}; use FilterOperator "
                                 "values and MetadataFilter(key=, value=, operator=)") from None


def query_to_json(query: VectorStoreQuery) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _QUERY_FIELDS:
        value = getattr(query, name)
        if name == "filters":
            value = filters_to_json(value)
        elif name == "mode":
            value = getattr(value, "value", value)
        elif name == "query_embedding" and value is not None:
            value = [float(x) for x in value]
        out[name] = value
    return out
