"""Schedule strings: encoding, parsing, fingerprints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmu_notifier.explore._schedule import (
    Schedule,
    ScheduleFormatError,
    decode_steps,
    encode_steps,
    fingerprint,
    scenario_fingerprint,
)


@given(st.lists(st.integers(min_value=0, max_value=51), max_size=300))
def test_steps_round_trip(steps: list[int]) -> None:
    assert decode_steps(encode_steps(steps)) == tuple(steps)


def test_steps_are_run_length_encoded() -> None:
    assert encode_steps([0, 0, 0, 1, 1, 0, 2]) == "a3b2ac"
    assert decode_steps("a3b2ac") == (0, 0, 0, 1, 1, 0, 2)


@given(st.lists(st.integers(min_value=0, max_value=51), max_size=50))
def test_schedule_string_round_trip(steps: list[int]) -> None:
    sched = Schedule("get-put", "0123abcd", "89abcdef", tuple(steps))
    assert Schedule.parse(str(sched)) == sched


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("mx2:get-put:0123abcd:89abcdef:a", "format 'mx2'"),
        ("mx1:get-put:0123abcd:a", "colon-separated"),
        ("mx1:get put:0123abcd:89abcdef:a", "bad scenario"),
        ("mx1:get-put:0123abcX:89abcdef:a", "bad fingerprint"),
        ("mx1:get-put:0123abcd:89abcdef:a3#", "bad step text"),
        ("mx1:get-put:0123abcd:89abcdef:a0", "zero count"),
    ],
)
def test_malformed_schedules_say_why(text: str, reason: str) -> None:
    with pytest.raises(ScheduleFormatError, match=reason):
        Schedule.parse(text)


def test_too_many_threads_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        encode_steps([52])


def test_fingerprints_are_stable_and_discriminating() -> None:
    assert fingerprint(["a", 1]) == fingerprint(["a", 1])
    assert fingerprint(["a", 1]) != fingerprint(["a1"])
    assert scenario_fingerprint("s", 1, ["A", "B"]) != scenario_fingerprint("s", 2, ["A", "B"])
    assert scenario_fingerprint("s", 1, ["A", "B"]) != scenario_fingerprint("s", 1, ["B", "A"])
