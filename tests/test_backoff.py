"""The one backoff policy: doubling, the cap, the jitter's share, bad values."""

from __future__ import annotations

import pytest
from reactivex.testing import TestScheduler

from pipeline.core.backoff import Backoff, retry_within


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


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns how many calls it took."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


FAST = Backoff(initial=0.001, cap=0.002)


def transient(error: Exception) -> bool:
    return isinstance(error, ConnectionError)


async def test_retry_within_calls_again_until_it_succeeds() -> None:
    flaky = Flaky(3, ConnectionError("down"))
    seen: list[int] = []
    result = await retry_within(
        flaky, FAST, within=60.0, retryable=transient, on_retry=lambda _, n: seen.append(n)
    )
    assert result == 4 and seen == [1, 2, 3]


async def test_retry_within_raises_an_error_that_may_not_pass_at_once() -> None:
    flaky = Flaky(3, ValueError("refused"))
    with pytest.raises(ValueError, match="refused"):
        await retry_within(flaky, FAST, within=60.0, retryable=transient)
    assert flaky.calls == 1


async def test_retry_within_raises_the_last_error_when_the_time_is_up() -> None:
    flaky = Flaky(10**9, ConnectionError("still down"))
    with pytest.raises(ConnectionError, match="still down"):
        await retry_within(flaky, FAST, within=0.0, retryable=transient)
    assert flaky.calls == 1
    flaky = Flaky(10**9, ConnectionError("still down"))
    with pytest.raises(ConnectionError):
        await retry_within(flaky, FAST, within=0.02, retryable=transient)
    assert flaky.calls > 1
