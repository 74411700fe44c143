"""The reader's prompts (two per window; one per summary and per conflict for the organiser) and the JSON schemas of their replies (kept short: they are paid per window).

Messages and existing memories are shown to the model under short labels (``m1``, ``e1``), never
under their real ids: the model can only name what it was shown, and a label it invents is refused.
"""

from __future__ import annotations

from typing import Any

EXTRACT_SYSTEM = (
    "You extract long-term memories about the users from a chat window. Return JSON only.\n"
    "Each memory: type fact|preference|event; text: one self-contained sentence naming the person "
    "(never 'I'/'you'); preference: explicit|implicit|none; when: for events, the time it happened as "
    "written or as a date (YYYY-MM-DD), else null; sources: labels of the messages it comes from; "
    "confidence 0-1; entities: names in it; relations: [subject, relation, object] triples.\n"
    "Skip questions, greetings and small talk. If a user explicitly asks to forget something, put "
    "what to forget in 'forget' (one sentence each). An empty list is a valid answer."
)

RECONCILE_SYSTEM = (
    "You keep a user's memory consistent. For each NEW memory choose one op:\n"
    "ADD: new information. UPDATE e#: the same memory, corrected or refined (the old one was wrong "
    "or incomplete). SUPERSEDE e#: the world changed; the old one was true before and is not now. "
    "NOOP e#: already known.\nFor each FORGET request choose DELETE e# for each memory it asks to forget.\n"
    "Use only the labels shown. Return JSON only: {\"decisions\": [{\"id\": \"c1\", \"op\": \"...\", "
    "\"target\": \"e1\" or null, \"reason\": \"short\"}]}."
)

EXTRACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "memories": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": ["fact", "preference", "event"]},
                    "text": {"type": "string"},
                    "preference": {"type": "string", "enum": ["explicit", "implicit", "none"]},
                    "when": {"type": ["string", "null"]},
                    "sources": {"type": "array", "items": {"type": "string"}},
                    "confidence": {"type": "number"},
                    "entities": {"type": "array", "items": {"type": "string"}},
                    "relations": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
                },
                "required": ["type", "text", "sources"],
            },
        },
        "forget": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["memories"],
}

RECONCILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decisions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "op": {"type": "string", "enum": ["ADD", "UPDATE", "SUPERSEDE", "DELETE", "NOOP"]},
                    "target": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                },
                "required": ["id", "op"],
            },
        },
    },
    "required": ["decisions"],
}

SUMMARIZE_SYSTEM = (
    "You summarise related memories of one user for a memory index. Write one to three short sentences "
    "that name the people, places and things the memories share and what happened, in time order. Use "
    "only what the memories say. Return JSON only: {\"summary\": \"...\"}."
)

CONFLICT_SYSTEM = (
    "Two memories of one user state the same thing about the same entity with different values. Decide:\n"
    "SUPERSEDE: the NEWER one replaces the OLDER (the world changed, or the older was a mistake); the "
    "older stays in history as true before.\nKEEP_BOTH: both can be true (different times, people or "
    "things, or not really the same attribute). Return JSON only: {\"decision\": \"SUPERSEDE\" or "
    "\"KEEP_BOTH\", \"reason\": \"short\"}."
)

LESSON_SYSTEM = (
    "You write one lesson for an AI agent about calling a tool, from the facts and calls below: when to "
    "avoid what, and what to do instead, in one or two short imperative sentences. Use only what is given. "
    "Return JSON only: {\"lesson\": \"...\"}."
)

LESSON_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"lesson": {"type": "string"}}, "required": ["lesson"],
}

SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"],
}

CONFLICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"decision": {"type": "string", "enum": ["SUPERSEDE", "KEEP_BOTH"]}, "reason": {"type": "string"}},
    "required": ["decision"],
}

REPAIR = "Your reply was not valid JSON for the schema ({error}). Reply again with the JSON object only."


def window_prompt(lines: list[tuple[str, str, str, str]]) -> str:
    """``lines``: (label, speaker, time or '', text) of each message of the window."""
    return "\n".join(f"{label} [{when}] {speaker}: {text}" if when else f"{label} {speaker}: {text}"
                     for label, speaker, when, text in lines)


def reconcile_prompt(new: list[tuple[str, str]], forget: list[tuple[str, str]], existing: list[tuple[str, str]]) -> str:
    parts = ["NEW:"] + [f"{label}: {text}" for label, text in new]
    if forget:
        parts += ["FORGET:"] + [f"{label}: {text}" for label, text in forget]
    parts += ["EXISTING:"] + [f"{label}: {text}" for label, text in existing]
    return "\n".join(parts)


def summary_prompt(texts: list[str]) -> str:
    """The members of one cluster or session, numbered, in the order given (time order)."""
    return "MEMORIES:\n" + "\n".join(f"{n + 1}. {text}" for n, text in enumerate(texts))


def conflict_prompt(newer: str, older: str) -> str:
    return f"NEWER: {newer}\nOLDER: {older}"


def lesson_prompt(tool: str, facts: str, calls: list[str]) -> str:
    return f"TOOL: {tool}\nFACTS: {facts}\nCALLS:\n" + "\n".join(f"- {c}" for c in calls)
