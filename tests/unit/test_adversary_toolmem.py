"""Adversary checks of tool-call redaction (toolmem.record.safe_args). Each test failed before its fix."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from memos_integrations.toolmem.record import safe_args

SECRET = "sk-live-9f8e7d6c5b4a"


@pytest.mark.parametrize("key", ["API Key", "api.key", "ＡＰＩ_ＫＥＹ", "pass\u200bword", "pwd", "access_key", "Private Key"])
def test_secret_keys_spelled_another_way_are_redacted(key: str) -> None:
    assert SECRET not in json.dumps(safe_args({key: SECRET}), ensure_ascii=False)


def test_a_secret_inside_a_url_or_header_value_is_redacted() -> None:
    args = {"url": f"https://api.example.com/v1/items?q=tea&api_key={SECRET}",
            "headers": f"Authorization: Bearer {SECRET}", "cmd": f"login --password={SECRET} --user bob"}
    out = json.dumps(safe_args(args), ensure_ascii=False)
    assert SECRET not in out and "api.example.com" in out and "--user bob" in out


@dataclass
class Login:
    user: str
    password: str


def test_a_dataclass_argument_does_not_leak_its_secret_field_through_repr() -> None:
    out = json.dumps(safe_args({"login": Login("bob", SECRET)}), ensure_ascii=False)
    assert SECRET not in out and "bob" in out


def test_a_non_mapping_argument_string_is_scrubbed_too() -> None:
    assert SECRET not in json.dumps(safe_args(f"token={SECRET}"), ensure_ascii=False)


def test_a_huge_generator_argument_is_not_consumed() -> None:
    def endless():  # type: ignore[no-untyped-def]
        n = 0
        while True:
            n += 1
            yield n
    out = safe_args({"stream": endless()})
    assert "generator" in json.dumps(out)


def test_a_secret_in_a_failed_calls_error_or_output_is_not_stored(cube) -> None:  # type: ignore[no-untyped-def]
    from memos_integrations.toolmem import ToolMemory

    memory = ToolMemory(cube, min_failures=1)
    for _ in range(2):
        memory.record("maya", "fetch", {"url": "https://api.example.com/v1/items"}, ok=False,
                      error=f"401 Client Error: Unauthorized for url: https://api.example.com/v1/items?api_key={SECRET}",
                      error_class="HTTPError", output=f"request headers: Authorization: Bearer {SECRET}")
    stored = json.dumps([c.__dict__ for c in memory.calls("maya")], default=str)
    assert SECRET not in stored and "api.example.com" in stored
    lessons = " ".join(i.text + json.dumps(i.metadata, default=str) for i in cube.get_all(user_id="maya"))
    assert SECRET not in lessons
