"""Deterministic stand-ins for offline notebooks and tests: NOT language models.

Where it sits: beside the face, for pipelines that need an LLM where none is configured (no network,
no weights). :class:`StandInLLM` answers by quoting the context sentence that shares the most words
with the question, and says so in every answer; :class:`PatternTripletExtractor` reads
``<Subject> <relation words> <Object>.`` sentences into graph triplets. Use a real LLM in production.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.graph_stores.types import KG_NODES_KEY, KG_RELATIONS_KEY, EntityNode, Relation
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent

LABEL = "[stand-in LLM, not a model]"
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    # a crude stem ("lives" ~ "live") is enough for a stand-in
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in _WORD.findall(text.lower()) if len(w) > 2}


class StandInLLM(CustomLLM):
    """Quotes the context sentence that best overlaps the question (deterministic, labelled).

    Example:
        >>> StandInLLM().complete("Context: Miso is a cat. Tea is hot.\\nQuery: what is Miso?").text
        '[stand-in LLM, not a model] Miso is a cat.'
    """

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="stand-in", context_window=32_000, num_output=256)

    @staticmethod
    def answer(prompt: str) -> str:
        # the question is the last non-empty line that mentions a query; the rest is context
        lines = [ln for ln in prompt.splitlines() if ln.strip()]
        q_lines = [ln for ln in lines if re.match(r"^\s*(query|question)\b", ln, re.I)]
        question = q_lines[-1] if q_lines else (lines[-1] if lines else "")
        context = prompt.replace(question, " ")
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", context) if len(s.strip()) > 3]
        want = _words(question) - {"query", "question", "answer", "what", "who", "where", "when", "does"}
        best = max(sentences, key=lambda s: (len(_words(s) & want), -len(s)), default="")
        best = re.sub(r"^\s*(context( information)?|text)\s*:\s*", "", best, flags=re.I)
        return f"{LABEL} {best}".strip()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.answer(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self.answer(prompt)
        yield CompletionResponse(text=text, delta=text)


_TRIPLET = re.compile(r"\b([A-Z][\w-]*)\s+((?:[a-z]+\s+){0,2}[a-z]+)\s+([A-Z][\w-]*)")


class PatternTripletExtractor(TransformComponent):
    """Reads ``Alice works at Acme.``-style sentences into (entity, RELATION, entity) triplets.

    Example:
        >>> from llama_index.core.schema import TextNode
        >>> node = PatternTripletExtractor()([TextNode(text="Alice works at Acme.")])[0]
        >>> [str(r) for r in node.metadata["relations"]]
        ['WORKS_AT']
    """

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        for node in nodes:
            entities: dict[str, EntityNode] = {}
            relations: list[Relation] = []
            for subj, rel, obj in _TRIPLET.findall(node.get_content(metadata_mode=MetadataMode.NONE)):
                for name in (subj, obj):
                    entities.setdefault(name, EntityNode(name=name))
                label = rel.upper().replace(" ", "_")
                relations.append(Relation(label=label, source_id=subj, target_id=obj))
            node.metadata[KG_NODES_KEY] = [*node.metadata.get(KG_NODES_KEY, []), *entities.values()]
            node.metadata[KG_RELATIONS_KEY] = [*node.metadata.get(KG_RELATIONS_KEY, []), *relations]
        return nodes
