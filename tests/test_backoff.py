"""The one backoff policy: doubling, the cap, the jitter's share, bad values."""

from __future__ import annotations

import pytest
from reactivex.testing import TestScheduler

from pipeline.core.backoff import Backoff


def test_delays_double_up_to_the_cap() -> None:
    policy = Backoff(initial=0.25, cap=1.5, jitter=0.5, random=lambda: 0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.5, 1.5]


def test_jitter_takes_off_at_most_its_share() -> None:
    most = Backoff(initial=1.0, cap=8.0, jitter=0.5, random=lambda: 1.0)
    assert [most.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    none = Backoff(initial=1.0, cap=8.0, jitter=0.0, random=lambda: 1.0)
    assert none.delay(3) == none.base(3) == 4.0


def test_default_random_stays_within_the_bounds() -> None:
    policy = Backoff(initial=0.1, cap=2.0)
    for attempt in range(1, 40):
        base = policy.base(attempt)
        assert base / 2 <= policy.delay(attempt) <= base


def test_a_huge_attempt_number_is_the_cap_not_an_overflow() -> None:
    assert Backoff(initial=0.05, cap=2.0).base(10_000) == 2.0


def test_first_attempt_numbers_below_one_wait_the_initial_delay() -> None:
    assert Backoff(initial=0.3, cap=1.0).base(0) == 0.3


def test_delays_run_in_virtual_time_on_a_scheduler() -> None:
    scheduler = TestScheduler()
    policy = Backoff(initial=2.0, cap=10.0, random=lambda: 0.0)
    fired: list[float] = []

    def retry(attempt: int) -> None:
        fired.append(scheduler.clock)
        if attempt < 3:
            scheduler.schedule_relative(policy.delay(attempt), lambda *_: retry(attempt + 1))

    scheduler.schedule_relative(0.0, lambda *_: retry(1))
    scheduler.start()
    assert fired == [0.0, 2.0, 6.0]


@pytest.mark.parametrize(
    ("initial", "cap", "jitter", "match"),
    [(-1.0, 1.0, 0.5, "initial"), (0.1, -1.0, 0.5, "cap"), (0.1, 1.0, 1.5, "jitter")],
)
def test_bad_values_are_refused(initial: float, cap: float, jitter: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Backoff(initial, cap, jitter)
