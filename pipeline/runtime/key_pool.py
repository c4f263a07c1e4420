"""API key pools: several keys for one upstream, handed out one request at a time.

:meth:`KeyPool.acquire` gives a :class:`Lease` on a healthy key: the
least-loaded one (fewest leases still open; ties go round-robin), or, with a
conversation id, the key the id hashes to while that key is healthy, so the
provider's prompt cache keeps serving that conversation. The mapping is
rendezvous hashing over the healthy keys: a key that cools down or is removed
moves only its own conversations, and every process maps an id to the same
key (the hash is not Python's per-process ``hash``).

:meth:`Lease.release` reports how the request went:

* 429 puts the key in cooldown for ``retry_after`` seconds (the upstream's
  ``Retry-After``), or else for ``cooldown * 2**(n-1)`` seconds after its
  n-th 429 in a row, at most ``max_cooldown``;
* 401 and 403 remove the key for good: a warning is logged and
  ``on_key_removed(fingerprint)`` is called;
* anything else (``None``: it went fine) ends the run of 429s.

Keys never appear in logs, reprs or error messages: a key is named by its
fingerprint, ``key:`` and the first 8 hex digits of its SHA-256
(:func:`fingerprint`), which identifies it without revealing any of it.

Example::

    pool = KeyPool(["sk-a...", "sk-b..."], cooldown=1.0)
    lease = pool.acquire(conversation_id="chat-42")
    try:
        ...  # a request with lease.key
    finally:
        lease.release(status=429, retry_after=2.0)

Errors: :class:`NoKeyAvailable` from :meth:`KeyPool.acquire` when every key
is cooling down (its ``retry_after`` says for how long) or none is left;
``ValueError`` at creation for no keys, an empty key or a bad cooldown.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

from pipeline.core.backoff import Backoff
from pipeline.core.errors import RxllmError

__all__ = ["KeyPool", "KeyStatus", "Lease", "NoKeyAvailable", "fingerprint"]

log = logging.getLogger(__name__)


def fingerprint(key: str) -> str:
    """Name ``key`` without revealing it: ``key:`` and 8 hex digits of its SHA-256."""
    return "key:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


class NoKeyAvailable(RxllmError):
    """No key of the pool can be used now.

    ``retry_after`` is the seconds until the first key's cooldown ends, or
    ``None`` when no key is left (every key was rejected with 401/403).
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Key:
    """One key's state (the pool's lock guards it)."""

    __slots__ = (
        "active",
        "cooling_until",
        "digest",
        "fingerprint",
        "last_used",
        "order",
        "removed",
        "secret",
        "strikes",
    )

    def __init__(self, secret: str, order: int) -> None:
        self.secret = secret
        self.fingerprint = fingerprint(secret)
        self.digest = hashlib.sha256(secret.encode("utf-8")).digest()
        self.order = order
        self.active = 0
        self.cooling_until = -math.inf
        self.strikes = 0
        self.removed = False
        self.last_used = -1

    def __repr__(self) -> str:
        return f"<key {self.fingerprint}>"


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """A snapshot of one key, by fingerprint (for status pages and tests)."""

    fingerprint: str
    active: int
    cooling_for: float
    removed: bool


class Lease:
    """The use of one key for one request; :meth:`release` it exactly once.

    ``key`` is the secret to send; ``fingerprint`` names it anywhere else.
    Also a context manager that releases with no status on exit (if not
    released already).
    """

    __slots__ = ("_key", "_pool", "_released")

    def __init__(self, pool: KeyPool, key: _Key) -> None:
        self._pool = pool
        self._key = key
        self._released = False

    @property
    def key(self) -> str:
        """The API key itself: send it, never log it."""
        return self._key.secret

    @property
    def fingerprint(self) -> str:
        """The key's fingerprint (see :func:`fingerprint`)."""
        return self._key.fingerprint

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._released

    def release(self, status: int | None = None, retry_after: float | None = None) -> None:
        """Give the key back with the request's outcome (HTTP ``status``; ``None``: fine).

        ``retry_after`` (seconds) is the upstream's Retry-After, used on 429.
        A second call does nothing.
        """
        if self._released:
            return
        self._released = True
        self._pool._release(self._key, status, retry_after)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self._key.fingerprint}{', released' if self._released else ''})"


class KeyPool:
    """Several API keys of one upstream; see the module docstring.

    ``cooldown`` is the first default cooldown after a 429 without
    Retry-After (doubling with each 429 in a row, at most ``max_cooldown``);
    ``sticky`` keeps a conversation on its key; ``clock`` gives monotonic
    seconds (inject a fake one in tests); ``on_key_removed`` is called with
    the fingerprint of a key removed after 401/403; ``name`` names the pool
    in log lines.
    """

    def __init__(
        self,
        keys: Iterable[str],
        *,
        cooldown: float = 1.0,
        max_cooldown: float = 60.0,
        sticky: bool = True,
        clock: Callable[[], float] = time.monotonic,
        on_key_removed: Callable[[str], None] | None = None,
        name: str = "keys",
    ) -> None:
        secrets: list[str] = []
        for key in keys:
            if not isinstance(key, str) or not key.strip():
                raise ValueError("an API key must be a non-empty string")
            if key not in secrets:
                secrets.append(key)
        if not secrets:
            raise ValueError("a key pool needs at least one API key")
        if not (cooldown >= 0 and max_cooldown >= cooldown):
            raise ValueError("cooldown must be >= 0 seconds and max_cooldown >= cooldown")
        self._keys = [_Key(secret, i) for i, secret in enumerate(secrets)]
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        # No jitter: a key's cooldown is its own, no crowd of clients retries together.
        self._backoff = Backoff(cooldown, max_cooldown, jitter=0.0)
        self.sticky = sticky
        self.clock = clock
        self.on_key_removed = on_key_removed
        self.name = name
        self._lock = threading.Lock()
        self._ticks = 0

    # -- handing out keys ------------------------------------------------------

    def acquire(self, conversation_id: str | None = None) -> Lease:
        """Lease a healthy key: the conversation's (if sticky), else the least loaded.

        Raises :class:`NoKeyAvailable` if every key is cooling down or removed.
        """
        with self._lock:
            now = self.clock()
            healthy = [k for k in self._keys if not k.removed and k.cooling_until <= now]
            if not healthy:
                raise self._unavailable(now)
            if conversation_id is not None and self.sticky:
                chosen = max(healthy, key=lambda k: _rank(k, conversation_id))
            else:
                chosen = min(healthy, key=lambda k: (k.active, k.last_used, k.order))
            chosen.active += 1
            self._ticks += 1
            chosen.last_used = self._ticks
            return Lease(self, chosen)

    def _unavailable(self, now: float) -> NoKeyAvailable:
        left = [k for k in self._keys if not k.removed]
        if not left:
            return NoKeyAvailable(
                f"no API key is left in pool {self.name!r}: every key was rejected (401/403)"
            )
        wait = min(k.cooling_until for k in left) - now
        return NoKeyAvailable(
            f"every API key of pool {self.name!r} is cooling down after 429; "
            f"the first is available again in {wait:.3g}s",
            retry_after=max(0.0, wait),
        )

    def _release(self, key: _Key, status: int | None, retry_after: float | None) -> None:
        removed = False
        with self._lock:
            key.active = max(0, key.active - 1)
            if key.removed:
                return
            if status == 429:
                key.strikes += 1
                if retry_after is not None and retry_after >= 0 and math.isfinite(retry_after):
                    seconds = retry_after
                else:
                    seconds = self._backoff.delay(key.strikes)
                key.cooling_until = max(key.cooling_until, self.clock() + seconds)
                log.info(
                    "API key %s of pool %r cools down for %.3gs after HTTP 429",
                    key.fingerprint,
                    self.name,
                    seconds,
                )
            elif status in (401, 403):
                key.removed = True
                removed = True
                left = sum(1 for k in self._keys if not k.removed)
                log.warning(
                    "API key %s removed from pool %r after HTTP %d; %d key(s) left",
                    key.fingerprint,
                    self.name,
                    status,
                    left,
                )
            elif status is None or status < 400:
                key.strikes = 0
        if removed and self.on_key_removed is not None:
            try:
                self.on_key_removed(key.fingerprint)
            except Exception:
                log.exception("the on_key_removed hook of pool %r failed", self.name)

    # -- reading ---------------------------------------------------------------

    def __len__(self) -> int:
        """The number of keys not removed (healthy or cooling down)."""
        with self._lock:
            return sum(1 for k in self._keys if not k.removed)

    @property
    def fingerprints(self) -> list[str]:
        """The fingerprints of the keys not removed, in the order given."""
        with self._lock:
            return [k.fingerprint for k in self._keys if not k.removed]

    def healthy(self) -> int:
        """The number of keys usable now (not removed, not cooling down)."""
        with self._lock:
            now = self.clock()
            return sum(1 for k in self._keys if not k.removed and k.cooling_until <= now)

    def wait_time(self) -> float | None:
        """Seconds until a key is usable (0: one is now); ``None`` if no key is left."""
        with self._lock:
            now = self.clock()
            left = [k for k in self._keys if not k.removed]
            if not left:
                return None
            return max(0.0, min(k.cooling_until for k in left) - now)

    def status(self) -> list[KeyStatus]:
        """A snapshot of every key, removed ones included, by fingerprint."""
        with self._lock:
            now = self.clock()
            return [
                KeyStatus(k.fingerprint, k.active, max(0.0, k.cooling_until - now), k.removed)
                for k in self._keys
            ]

    def __repr__(self) -> str:
        return f"KeyPool({self.name!r}, {self.status()!r})"


def _rank(key: _Key, conversation_id: str) -> bytes:
    """Rendezvous score of ``key`` for a conversation: the highest wins."""
    return hashlib.blake2b(
        key.digest + conversation_id.encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
