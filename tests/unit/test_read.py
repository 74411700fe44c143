"""The fast reader: messages -> items with sources, speaker, session, event time and resolved relative times."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from memos_integrations.errors import EmptyTextError, InvalidInputError, InvalidTypeError, OversizedInputError
from memos_integrations.items import Kind
from memos_integrations.textual.read import FastReader, check_text, parse_timestamp, resolve_relative

UTC = timezone.utc


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56, tzinfo=UTC)),
        ("10:37 am on 27 June, 2023", datetime(2023, 6, 27, 10, 37, tzinfo=UTC)),
        ("12:05 am on 1 January, 2024", datetime(2024, 1, 1, 0, 5, tzinfo=UTC)),
        ("12:30 pm on 3 Feb, 2022", datetime(2022, 2, 3, 12, 30, tzinfo=UTC)),
        ("8 May 2023", datetime(2023, 5, 8, tzinfo=UTC)),
        ("May 8, 2023", datetime(2023, 5, 8, tzinfo=UTC)),
        # two-digit days without a clock were once read as "<hour> <day>": 27 June -> 2 am on 7 June
        ("27 June, 2023", datetime(2023, 6, 27, tzinfo=UTC)),
        ("12 May 2023", datetime(2023, 5, 12, tzinfo=UTC)),
        ("3pm, 27 June 2023", datetime(2023, 6, 27, 15, 0, tzinfo=UTC)),
        ("10 am on 27 June, 2023", datetime(2023, 6, 27, 10, 0, tzinfo=UTC)),
        ("7:00 pm on Sept 3rd, 2023", datetime(2023, 9, 3, 19, 0, tzinfo=UTC)),
        ("2023-05-08T13:56:00", datetime(2023, 5, 8, 13, 56, tzinfo=UTC)),
        ("2023-05-08T13:56:00Z", datetime(2023, 5, 8, 13, 56, tzinfo=UTC)),
        ("2023-05-08", datetime(2023, 5, 8, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_free_text_and_iso(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected


def test_parse_timestamp_other_types() -> None:
    assert parse_timestamp(None) is None
    assert parse_timestamp(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_timestamp(date(2023, 5, 8)) == datetime(2023, 5, 8, tzinfo=UTC)
    assert parse_timestamp(datetime(2023, 5, 8, 1, 2)).tzinfo is not None  # naive -> UTC
    with pytest.raises(InvalidTypeError):
        parse_timestamp(True)
    with pytest.raises(InvalidTypeError):
        parse_timestamp(["2023"])


@pytest.mark.parametrize("bad", ["next Tuesday-ish", "31 February, 2023", "8 Smarch, 2023", ""])
def test_parse_timestamp_rejects_what_it_cannot_read(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="ISO 8601"):
        parse_timestamp(bad)


def test_resolve_relative_expressions() -> None:
    at = datetime(2023, 5, 17, 9, 0, tzinfo=UTC)  # a Wednesday
    found = {e.lower(): (a, b) for e, a, b in resolve_relative(
        "Yesterday I ran; last week I swam; last month I hiked; two days ago I rested; last Friday I read; 3 weeks ago",
        at)}
    assert found["yesterday"] == (date(2023, 5, 16), date(2023, 5, 16))
    assert found["last week"] == (date(2023, 5, 8), date(2023, 5, 14))
    assert found["last month"] == (date(2023, 4, 1), date(2023, 4, 30))
    assert found["two days ago"] == (date(2023, 5, 15), date(2023, 5, 15))
    assert found["last friday"] == (date(2023, 5, 12), date(2023, 5, 12))
    assert found["3 weeks ago"] == (date(2023, 4, 26), date(2023, 4, 26))
    assert resolve_relative("nothing about time here", at) == []
    # month arithmetic across a year boundary
    assert resolve_relative("last month", datetime(2023, 1, 10, tzinfo=UTC))[0][1:] == (date(2022, 12, 1), date(2022, 12, 31))


def test_check_text() -> None:
    assert check_text("ok", 10) == "ok"
    with pytest.raises(EmptyTextError, match="empty"):
        check_text(" \n\t", 10)
    with pytest.raises(InvalidTypeError, match="string"):
        check_text(b"bytes", 10)
    with pytest.raises(OversizedInputError, match="max_text_chars"):
        check_text("x" * 11, 10)


def test_fast_reader_without_a_cube() -> None:
    items = FastReader().read(
        [{"role": "user", "content": "hi there", "id": 7, "timestamp": "2023-01-02"},
         {"role": "assistant", "content": "hello"}],
        context={"user_id": "u", "timestamp": "8 May 2023"},
    )
    assert [i.sources for i in items] == [["7"], []]
    assert items[0].event_time == datetime(2023, 1, 2, tzinfo=UTC)  # a message's own time wins
    assert items[1].event_time == datetime(2023, 5, 8, tzinfo=UTC)
    assert items[1].context.startswith("user: hi there")  # the preceding turn is indexed with the answer
    assert items[1].text == "hello"


def test_add_messages_parses_sources_speaker_session_and_event_time(cube) -> None:  # type: ignore[no-untyped-def]
    items = cube.add(
        messages=[
            {"role": "user", "name": "Caroline", "content": "I went to a support group yesterday.", "id": "D1:3"},
            {"role": "assistant", "name": "Melanie", "content": "That sounds brave. How was it?", "id": "D1:4"},
        ],
        user_id="caroline", session_id="s1", timestamp="1:56 pm on 8 May, 2023",
    )
    first, second = items
    assert first.kind is Kind.MESSAGE and first.method == "fast_reader"
    assert first.sources == ["D1:3"] and second.sources == ["D1:4"]
    assert first.metadata["speaker"] == "Caroline" and first.metadata["role"] == "user"
    assert second.metadata["speaker"] == "Melanie"
    assert (first.user_id, first.session_id, first.cube_id) == ("caroline", "s1", cube.cube_id)
    assert first.event_time == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert first.metadata["refers_to"] == [{"expression": "yesterday", "from": "2023-05-07", "to": "2023-05-07"}]
    assert "refers_to" not in second.metadata
    # what was returned is what is stored
    stored = cube.get(first.id)
    assert stored == first
    hit = cube.search("When did Caroline go to the support group?", user_id="caroline", top_k=5)[0]
    assert hit.item.id == first.id and hit.item.sources == ["D1:3"]


def test_consecutive_turns_are_linked_across_calls(cube) -> None:  # type: ignore[no-untyped-def]
    a = cube.add(messages=[{"role": "user", "content": "first turn"}], user_id="u", session_id="s")
    b = cube.add(messages=[{"role": "assistant", "content": "second turn"}], user_id="u", session_id="s")
    c = cube.add(messages=[{"role": "user", "content": "other session"}], user_id="u", session_id="t")
    assert [n.id for n in cube.neighbors(a[0].id)] == [b[0].id]
    assert c[0].id not in {n.id for n in cube.neighbors(b[0].id)}
    # the previous turn of the session is indexed as context of the next one
    assert "first turn" in b[0].context


def test_add_memory_text(cube) -> None:  # type: ignore[no-untyped-def]
    items = cube.add(memory=["Alice likes genmaicha.", "Alice lives in Lisbon."], user_id="alice", kind="preference",
                     tags=["tea"], metadata={"source": "chat"}, sources=["m1"], timestamp="8 May 2023")
    assert [i.text for i in items] == ["Alice likes genmaicha.", "Alice lives in Lisbon."]
    assert all(i.kind is Kind.PREFERENCE and i.tags == ["tea"] and i.sources == ["m1"] for i in items)
    assert all(i.method == "direct" and i.created_by == "alice" for i in items)
    assert items[0].event_time == datetime(2023, 5, 8, tzinfo=UTC)
    assert cube.get(items[1].id) == items[1]
    single = cube.add(memory="One more.", user_id="alice")
    assert len(single) == 1 and single[0].kind is Kind.FACT


def test_a_new_turn_follows_the_latest_turn_even_after_an_older_one_was_edited(cube) -> None:  # type: ignore[no-untyped-def]
    one, two = cube.add(messages=[{"role": "user", "content": "turn one"}, {"role": "user", "content": "turn two"}],
                        user_id="u", session_id="s")
    cube.update(one.id, text="turn one, edited later")
    three = cube.add(messages=[{"role": "user", "content": "turn three"}], user_id="u", session_id="s")[0]
    assert [n.id for n in cube.neighbors(three.id)] == [two.id]
    assert "turn two" in three.context and "turn one" not in three.context


@pytest.mark.parametrize("bad", [1683554160000, float("nan"), float("inf")])
def test_epoch_out_of_range_is_an_input_error(bad: float) -> None:
    with pytest.raises(InvalidInputError, match="epoch seconds"):
        parse_timestamp(bad)


def test_an_upper_bound_given_as_a_day_covers_the_whole_day() -> None:
    from memos_integrations.textual.read import parse_time_bound

    end = datetime(2023, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_time_bound("2023-06-30", upper=True) == end
    assert parse_time_bound("30 June 2023", upper=True) == end
    assert parse_time_bound(date(2023, 6, 30), upper=True) == end
    assert parse_time_bound("2023-06-30", upper=False) == datetime(2023, 6, 30, tzinfo=UTC)
    assert parse_time_bound("2023-06-30T12:00", upper=True) == datetime(2023, 6, 30, 12, tzinfo=UTC)
    assert parse_time_bound("3pm, 30 June 2023", upper=True) == datetime(2023, 6, 30, 15, tzinfo=UTC)
    assert parse_time_bound(datetime(2023, 6, 30), upper=True) == datetime(2023, 6, 30, tzinfo=UTC)
