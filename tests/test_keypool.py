"""KeyPool: least loaded, cooldown on 429, removal on 401/403, sticky conversations, no leaks."""

from __future__ import annotations

import logging
from collections import Counter

import pytest

from pipeline.runtime.key_pool import KeyPool, NoKeyAvailable, fingerprint

KEYS = ["sk-test-alpha-0123456789abcdef", "sk-test-bravo-0123456789abcdef", "plainkeyCHARLIE77"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fp(i: int) -> str:
    return fingerprint(KEYS[i])


def test_fingerprint_names_a_key_without_revealing_it() -> None:
    f = fingerprint(KEYS[0])
    assert f.startswith("key:") and len(f) == 12
    assert f == fingerprint(KEYS[0]) != fingerprint(KEYS[1])
    assert not any(part in f for part in (KEYS[0][-4:], KEYS[0][:8]))


def test_least_loaded_key_first_ties_round_robin() -> None:
    pool = KeyPool(KEYS)
    a, b, c = (pool.acquire() for _ in range(3))
    assert [a.fingerprint, b.fingerprint, c.fingerprint] == [fp(0), fp(1), fp(2)]
    b.release()
    assert pool.acquire().fingerprint == fp(1)  # the only key with no open lease
    a.release()
    c.release()
    # Equal loads: the least recently used key goes next.
    assert [pool.acquire().fingerprint for _ in range(3)] == [fp(0), fp(2), fp(1)]


def test_many_acquires_spread_evenly() -> None:
    pool = KeyPool(KEYS)
    seen: Counter[str] = Counter()
    for _ in range(30):
        lease = pool.acquire()
        seen[lease.fingerprint] += 1
        lease.release()
    assert set(seen.values()) == {10}


def test_429_cools_the_key_down_for_retry_after() -> None:
    clock = Clock()
    pool = KeyPool(KEYS[:2], clock=clock)
    lease = pool.acquire()
    assert lease.fingerprint == fp(0)
    lease.release(status=429, retry_after=5.0)
    assert pool.healthy() == 1
    # While key 0 cools down, only key 1 is handed out, however loaded it is.
    leases = [pool.acquire() for _ in range(3)]
    assert {x.fingerprint for x in leases} == {fp(1)}
    clock.now += 4.9
    assert pool.acquire().fingerprint == fp(1)
    clock.now += 0.1
    assert pool.acquire().fingerprint == fp(0)  # back, and the least loaded


def test_429_without_retry_after_backs_off_exponentially() -> None:
    clock = Clock()
    pool = KeyPool(KEYS[:1], cooldown=1.0, max_cooldown=3.0, clock=clock)
    for expected in (1.0, 2.0, 3.0, 3.0):  # doubling, capped
        pool.acquire().release(status=429)
        assert pool.wait_time() == pytest.approx(expected)
        clock.now += expected
    pool.acquire().release()  # a success ends the run of 429s
    pool.acquire().release(status=429)
    assert pool.wait_time() == pytest.approx(1.0)


def test_every_key_cooling_raises_with_the_wait() -> None:
    clock = Clock()
    pool = KeyPool(KEYS[:2], clock=clock)
    pool.acquire().release(status=429, retry_after=2.0)
    pool.acquire().release(status=429, retry_after=3.0)
    with pytest.raises(NoKeyAvailable) as caught:
        pool.acquire()
    assert caught.value.retry_after == pytest.approx(2.0)
    assert "cooling down" in str(caught.value)
    clock.now += 2.0
    assert pool.acquire().fingerprint == fp(0)


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_remove_the_key_with_a_log_line_and_a_hook(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    removed: list[str] = []
    pool = KeyPool(KEYS, on_key_removed=removed.append, name="openai")
    caplog.set_level(logging.DEBUG)
    lease = pool.acquire()
    lease.release(status=status)
    assert removed == [fp(0)]
    assert len(pool) == 2 and pool.fingerprints == [fp(1), fp(2)]
    assert f"API key {fp(0)} removed from pool 'openai' after HTTP {status}" in caplog.text
    assert all(pool.acquire().fingerprint != fp(0) for _ in range(10))
    assert KEYS[0] not in caplog.text


def test_no_key_left_raises_without_retry_after() -> None:
    pool = KeyPool(KEYS[:1])
    pool.acquire().release(status=401)
    with pytest.raises(NoKeyAvailable) as caught:
        pool.acquire()
    assert caught.value.retry_after is None
    assert "no API key is left" in str(caught.value)
    assert pool.wait_time() is None and len(pool) == 0


def test_a_failing_hook_is_logged_and_the_key_still_removed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def hook(fingerprint: str) -> None:
        raise RuntimeError("hook broke")

    pool = KeyPool(KEYS[:2], on_key_removed=hook)
    pool.acquire().release(status=403)
    assert len(pool) == 1
    assert "on_key_removed hook" in caplog.text


def test_other_statuses_change_nothing() -> None:
    pool = KeyPool(KEYS[:2])
    for status in (400, 404, 500, 503, None):
        pool.acquire().release(status=status)
    assert pool.healthy() == 2 and len(pool) == 2


def test_release_is_idempotent_and_a_context_manager() -> None:
    pool = KeyPool(KEYS[:1])
    with pool.acquire() as lease:
        assert pool.status()[0].active == 1
    assert lease.released and pool.status()[0].active == 0
    lease.release(status=401)  # ignored: already released
    assert len(pool) == 1


def test_sticky_conversation_stays_on_its_key() -> None:
    pool = KeyPool(KEYS)
    first = {cid: pool.acquire(cid).fingerprint for cid in (f"chat-{i}" for i in range(60))}
    # The same id maps to the same key whatever the load...
    for cid, key in first.items():
        assert pool.acquire(cid).fingerprint == key
    # ...and the ids spread over every key.
    assert set(first.values()) == {fp(0), fp(1), fp(2)}
    # A new pool (another process) with the same keys maps them the same way.
    other = KeyPool(list(reversed(KEYS)))
    assert all(other.acquire(cid).fingerprint == key for cid, key in first.items())


def test_sticky_conversation_moves_only_while_its_key_is_unhealthy() -> None:
    clock = Clock()
    pool = KeyPool(KEYS, clock=clock)
    cids = [f"conv-{i}" for i in range(60)]
    home = {cid: pool.acquire(cid).fingerprint for cid in cids}
    cooling = home[cids[0]]
    lease = pool.acquire(cids[0])
    lease.release(status=429, retry_after=10.0)
    moved = {cid: pool.acquire(cid).fingerprint for cid in cids}
    for cid in cids:
        if home[cid] == cooling:
            assert moved[cid] != cooling
        else:
            assert moved[cid] == home[cid]  # rendezvous: nobody else moves
    clock.now += 10.0
    assert {cid: pool.acquire(cid).fingerprint for cid in cids} == home


def test_not_sticky_ignores_the_conversation() -> None:
    pool = KeyPool(KEYS, sticky=False)
    got = {pool.acquire("same-conversation").fingerprint for _ in range(3)}
    assert len(got) == 3  # least loaded each time


def test_bad_pools_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        KeyPool([])
    with pytest.raises(ValueError, match="non-empty"):
        KeyPool(["sk-ok-key", "  "])
    with pytest.raises(ValueError, match="cooldown"):
        KeyPool(KEYS, cooldown=-1)
    assert len(KeyPool([KEYS[0], KEYS[0]])) == 1  # duplicates collapse


def test_keys_never_appear_in_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    pool = KeyPool(KEYS, clock=clock, name="p")
    leases = [pool.acquire(), pool.acquire("conv"), pool.acquire()]
    leases[0].release(status=429, retry_after=1.0)
    leases[1].release(status=401)
    texts = [
        repr(pool),
        str(pool),
        repr(leases),
        str(leases[2]),
        repr(pool.status()),
        caplog.text,
    ]
    with pytest.raises(NoKeyAvailable) as caught:
        for _ in range(5):
            leases[2].release(status=429)
            pool.acquire().release(status=429, retry_after=5.0)
    texts += [str(caught.value), repr(caught.value)]
    joined = "\n".join(texts)
    for key in KEYS:
        assert key not in joined
        assert key[-8:] not in joined
    assert fp(0) in repr(pool) and "removed" in repr(pool)
    assert "cools down" in caplog.text and "removed from pool" in caplog.text
    assert leases[2].key in KEYS  # the key itself is only reachable on purpose
