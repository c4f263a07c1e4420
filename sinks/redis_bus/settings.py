"""How the bus names its keys, trims, expires, batches and retries; every field has a default.

Keys (``prefix`` is ``rxllm`` by default)::

    {prefix}:stream:{id}    a Redis stream: one entry per event, entry id "{seq}-1",
                            one field "e" holding the event's JSON; trimmed to about
                            ``maxlen`` entries; expires ``live_ttl`` s after its last
                            refresh while live, ``finished_ttl`` s after the terminal event
    {prefix}:owner:{id}     the owning process's name while the stream is live
    {prefix}:readers:{id}   how many clients read the stream through other processes
    {prefix}:chat:{id}      a useChat chat's last answer: "{stream id} {message id}",
                            expiring ``finished_ttl`` s after it was written
    {prefix}:cancel         the pub/sub channel of cancel requests (JSON {"id", "reason"})

Why entry ids ``{seq}-1``: the id of event ``seq`` is known without a lookup,
so "the events after seq X" is ``XREAD ... STREAMS key X-1`` (or ``XRANGE key
{X+1}-0 +``), and a retried ``XADD`` of an event already written fails with
"equal or smaller than the target stream top item" instead of adding a
duplicate: publishing is idempotent. (``0-0`` is not a valid entry id, hence
the ``-1``.)
"""

from __future__ import annotations

from pydantic import Field

from sinks._drain_writer import RetrySettings

__all__ = ["BusSettings", "entry_id", "entry_seq", "id_before"]


class BusSettings(RetrySettings):
    """Naming, trimming, expiry, batching and retries of the bus (``retry_*``: see the base)."""

    prefix: str = Field(default="rxllm", min_length=1, description="the keys' prefix")
    maxlen: int = Field(
        default=10_000, ge=1, description="entries kept per stream (approximate trim, at least)"
    )
    live_ttl: float = Field(
        default=60.0,
        gt=0,
        description="seconds a live stream's key and owner record live without a refresh "
        "(refreshed at every write and every live_ttl/3 seconds)",
    )
    finished_ttl: float = Field(
        default=120.0, gt=0, description="seconds a stream's key stays after its terminal event"
    )
    flush_interval: float = Field(
        default=0.005, ge=0, description="seconds the writer waits to gather a batch"
    )
    batch_size: int = Field(default=512, ge=1, description="events per pipelined round trip")
    max_buffer: int = Field(
        default=50_000, ge=1, description="events held while Redis is slow or down; more dropped"
    )
    close_timeout: float = Field(
        default=5.0, ge=0, description="seconds close() waits for the last events to be written"
    )
    block: float = Field(
        default=1.0,
        gt=0,
        description="seconds a reader's XREAD blocks before it checks the key still exists",
    )
    reconnect_timeout: float = Field(
        default=10.0, ge=0, description="seconds a reader retries an unreachable Redis"
    )

    def stream_key(self, stream_id: str) -> str:
        """The Redis stream of ``stream_id``'s events."""
        return f"{self.prefix}:stream:{stream_id}"

    def owner_key(self, stream_id: str) -> str:
        """The owner record of a live stream."""
        return f"{self.prefix}:owner:{stream_id}"

    def readers_key(self, stream_id: str) -> str:
        """The count of a stream's readers on other processes."""
        return f"{self.prefix}:readers:{stream_id}"

    def chat_key(self, chat_id: str) -> str:
        """The record of a ``useChat`` chat's last answer."""
        return f"{self.prefix}:chat:{chat_id}"

    @property
    def cancel_channel(self) -> str:
        """The pub/sub channel of cancel requests."""
        return f"{self.prefix}:cancel"


def entry_id(seq: int) -> str:
    """The Redis stream entry id of event ``seq``."""
    return f"{seq}-1"


def id_before(seq: int) -> str:
    """The entry id just before event ``seq``: ``XREAD`` from it returns ``seq`` onwards."""
    return "0-0" if seq <= 0 else entry_id(seq - 1)


def entry_seq(entry: bytes | str) -> int:
    """The ``seq`` of an entry id (its first part)."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.split("-", 1)[0])
