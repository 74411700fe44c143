"""The JSON shapes of the REST API (pydantic), which are also its OpenAPI schema.

Requests refuse unknown fields (a typo is a 422 that names the field, not a silently ignored option).
Responses are built as plain dicts for speed and declared here for the schema; an :class:`Item` is
exactly :meth:`memos_integrations.items.MemoryItem.to_dict`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..items import Kind

Id = Field(default=None, min_length=1, max_length=256)
KindName = Literal["message", "fact", "preference", "event", "summary", "document", "chunk"]
assert set(KindName.__args__) == {k.value for k in Kind}  # type: ignore[attr-defined]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(Strict):
    role: str = Field(min_length=1, max_length=64)
    content: str
    name: str | None = Field(default=None, max_length=256)


class AddIn(Strict):
    """Exactly one of ``text`` or ``messages``; ``kind`` and ``metadata`` apply to ``text``."""

    text: str | None = None
    messages: list[Message] | None = Field(default=None, min_length=1)
    session_id: str | None = Id
    agent_id: str | None = Id
    kind: KindName | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    timestamp: str | None = Field(default=None, max_length=128, description="when it was said, e.g. '2023-05-08T13:56'")
    mode: Literal["fast", "fine", "async"] = "fast"
    cube_id: str | None = Id
    user_id: str | None = Id

    @model_validator(mode="after")
    def _one_source(self) -> AddIn:
        if (self.text is None) == (self.messages is None):
            raise ValueError("send exactly one of 'text' or 'messages'")
        if self.messages is not None and (self.kind is not None or self.metadata is not None):
            raise ValueError("'kind' and 'metadata' apply to 'text'; messages are stored as kind 'message'")
        return self


class SearchIn(Strict):
    query: str = Field(min_length=1)
    k: int = Field(default=10, ge=1)
    session_id: str | None = Id
    agent_id: str | None = Id
    kinds: list[KindName] | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    plan: Literal["fast", "balanced", "deep", "multihop", "learned", "late"] | None = None
    current_session: str | None = Field(default=None, min_length=1, max_length=256,
                                        description="the session the caller acts in: its working memory leads "
                                                    "when the plan puts working memory first (deep, multihop); "
                                                    "not a filter")
    time_from: str | None = Field(default=None, max_length=128)
    time_to: str | None = Field(default=None, max_length=128)
    as_of: datetime | None = Field(default=None, description="what was true then: memories valid at this time (their "
                                                             "superseded versions included); also the reference time for "
                                                             "relative expressions unless `now` is given. Default: the current truth")
    now: datetime | None = Field(default=None, description="the reference time for relative expressions in the query "
                                                           "('last week'); default as_of, else now")
    cube_id: str | None = Id
    user_id: str | None = Id
    conflicts: bool = Field(default=False, description="also answer each hit's flagged-conflict notes in "
                                                       "'conflicts' (as POST /v1/faces/conflicts would): one "
                                                       "request for a face's page instead of two")


class PatchIn(Strict):
    text: str | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    expected_version: int | None = Field(default=None, ge=1, description="write only if this is still the latest version")

    @model_validator(mode="after")
    def _something(self) -> PatchIn:
        if self.text is None and self.metadata is None and self.tags is None:
            raise ValueError("send at least one of 'text', 'metadata' or 'tags'")
        return self


class FeedbackIn(Strict):
    text: str = Field(min_length=1)
    session_id: str | None = Id
    cube_id: str | None = Id
    user_id: str | None = Id


class CubeIn(Strict):
    cube_id: str = Field(min_length=1, max_length=128)


class ShareIn(Strict):
    user_id: str = Field(min_length=1, max_length=256)
    access: Literal["read", "write"] = "read"


class ExportIn(Strict):
    cube_id: str | None = Id
    user_id: str | None = Id


class ImportIn(Strict):
    rows: list[dict[str, Any]] = Field(min_length=1, description="rows as POST /v1/export returns them")
    cube_id: str | None = Id
    user_id: str | None = Id


# -- responses (documentation and schemathesis checks; the routes return plain dicts) ---------------------------
class Item(BaseModel):
    id: str
    text: str
    kind: KindName
    user_id: str | None
    agent_id: str | None
    session_id: str | None
    cube_id: str | None
    created_at: str
    updated_at: str
    event_time: str | None
    valid_from: str | None
    valid_to: str | None
    state: str
    version: int
    sources: list[str]
    created_by: str | None
    method: str | None
    confidence: float | None
    tags: list[str]
    metadata: dict[str, Any]
    parent_id: str | None
    context: str


class Items(BaseModel):
    items: list[Item]


class Page(BaseModel):
    items: list[Item]
    next_cursor: str | None


class Hit(BaseModel):
    item: Item
    score: float
    ranks: dict[str, int] = Field(default_factory=dict)


class Hits(BaseModel):
    hits: list[Hit]
    conflicts: dict[str, list[str]] | None = Field(default=None, description=(
        "only when asked ('conflicts': true): memory id -> the short texts of the memories it is flagged as "
        "contradicting; ids without any are left out"))


class Versions(BaseModel):
    versions: list[Item]


class Deleted(BaseModel):
    deleted: int


class CubeOut(BaseModel):
    cube_id: str
    access: str


class Cubes(BaseModel):
    cubes: list[CubeOut]


class Me(BaseModel):
    user_id: str
    name: str | None
    role: str
    agent_id: str | None
    key_id: str
    cubes: list[CubeOut]


class StatsOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    cube_id: str | None
    items: int


class AuditOut(BaseModel):
    entries: list[dict[str, Any]]


class ExportOut(BaseModel):
    cube_id: str | None
    rows: list[dict[str, Any]]


class ImportOut(BaseModel):
    cube_id: str
    imported: int


class Status(BaseModel):
    status: str


class ErrorBody(BaseModel):
    type: str
    message: str
    request_id: str


class ErrorOut(BaseModel):
    error: ErrorBody
