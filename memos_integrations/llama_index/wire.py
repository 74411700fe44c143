"""LlamaIndex nodes, filters and queries as JSON, both ways, for the vector store on a remote cube.

Where it sits: between the client's ``MemOSVectorStore`` over a ``RemoteCube`` and the service's routes
(:mod:`memos_integrations.server.routes_vectors`). Nodes use llama_index's own ``doc_to_json`` form;
reading one back builds only plain node classes (text, image, document; an ``IndexNode`` without its
``obj``), so a body can never make the service build an arbitrary object. Anything malformed is an
:class:`~memos_integrations.errors.InvalidInputError` that says which node.

Hostile fields (adversary findings): llama_index acts on some node fields while building or reading a
node, on the service's side. ``ImageDocument(image_url=...)`` fetches the URL (60 s timeouts) and
``image_path=`` opens a file of the server's, so those legacy fields are refused (``doc_to_json`` writes
``image_resource``, whose path and URL are only kept, never read). ``text_template`` and
``metadata_template`` are ``str.format`` strings: a format spec (``{value:>10000000}``) turned a small
body into a huge string, and attribute access (``{key.__class__}``) reads objects, so a template may
name only its own fields (``{content}``, ``{metadata_str}``; ``{key}``, ``{value}``), bare.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Sequence
from typing import Any

from llama_index.core.schema import BaseNode, Document, ImageDocument, ImageNode, IndexNode, TextNode
from llama_index.core.storage.docstore.utils import doc_to_json
from llama_index.core.vector_stores.types import MetadataFilters, VectorStoreQuery

from ..errors import InvalidFilterError, InvalidInputError, InvalidTypeError

_TYPES: dict[str, type[BaseNode]] = {cls.class_name(): cls for cls in (TextNode, ImageNode, IndexNode, Document, ImageDocument)}
_QUERY_FIELDS = frozenset(f.name for f in dataclasses.fields(VectorStoreQuery))
#: the fields each format template of a node may name (bare: no format spec, conversion, attribute or index)
_TEMPLATES = {"text_template": frozenset({"content", "metadata_str"}), "metadata_template": frozenset({"key", "value"})}
#: legacy ImageDocument arguments that make llama_index open a path or fetch a URL while building the node
_FETCHING = ("image_path", "image_url")


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
        _check_fields(n, data)
        try:
            nodes.append(cls.from_dict({k: v for k, v in data.items() if k != "obj"}))
        except (ValueError, TypeError, KeyError) as exc:  # pydantic's ValidationError is a ValueError
            raise InvalidInputError(f"nodes[{n}] is not a valid {cls.class_name()}: {str(exc)[:300]}") from None
    return nodes


def _check_fields(n: int, data: dict[str, Any]) -> None:
    """Refuse the fields llama_index would act on here: fetching ones, and templates beyond plain fields."""
    fetching = [k for k in _FETCHING if data.get(k) is not None]
    if fetching:
        raise InvalidInputError(f"nodes[{n}] sets {fetching}: the service does not open paths or fetch URLs for a "
                                "node; send the image as image_resource (what doc_to_json writes)")
    for name, allowed in _TEMPLATES.items():
        template = data.get(name)
        if template is None:
            continue
        if not isinstance(template, str) or len(template) > 10_000:
            raise InvalidInputError(f"nodes[{n}].{name} must be a template string of at most 10,000 characters")
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
        except ValueError as exc:
            raise InvalidInputError(f"nodes[{n}].{name} is not a format template ({exc})") from None
        if any(f not in allowed or spec or conv for f, spec, conv in fields):
            raise InvalidInputError(f"nodes[{n}].{name} may name only {sorted(allowed)}, each as a bare "
                                    "{field} (no format spec, conversion, attribute or index)")


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
