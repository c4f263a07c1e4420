"""``bench.real_rate``'s paired ratio: each round's proxy sample over the relay's of that round."""

from __future__ import annotations

from bench.real_rate import paired_ratio


def _samples(*us: float, start: int = 0) -> list[dict[str, float | int]]:
    return [{"round": start + i, "us_per_chunk": v} for i, v in enumerate(us)]


def test_each_round_is_divided_by_the_relay_of_the_same_round() -> None:
    # Medians alone would say 120 / 60 = 2.0; round by round the proxy is 1.5x to 2.5x.
    proxy = _samples(90.0, 120.0, 150.0)
    relay = _samples(60.0, 80.0, 60.0)
    got = paired_ratio(proxy, relay)
    assert got["x_relay_by_round"] == "1.50/1.50/2.50"
    assert got["x_relay_paired"] == 1.5


def test_a_round_without_the_relay_is_left_out() -> None:
    proxy = _samples(100.0, 300.0, 90.0)
    relay = [{"round": 0, "us_per_chunk": 50.0}, {"round": 2, "us_per_chunk": 45.0}]
    got = paired_ratio(proxy, relay)
    assert got["x_relay_by_round"] == "2.00/2.00"
    assert got["x_relay_paired"] == 2.0


def test_no_round_in_common_gives_nothing() -> None:
    assert paired_ratio(_samples(100.0), _samples(50.0, start=1)) == {}
