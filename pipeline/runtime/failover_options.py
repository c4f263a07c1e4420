"""Failover options: retries, backoff, the time budget and the timeouts of a failover.

One frozen model says them, with their defaults and bounds, for
:func:`pipeline.runtime.failover.failover` (which takes one as ``options=``,
or builds one from its keyword arguments) and for the ``[failover]`` table of
``rxllm serve --config`` (:mod:`pipeline.apps.server.config_file`).

Example::

    options = FailoverOptions(retries=1, first_token_timeout=10)
    events = failover(upstreams, params, options=options)
    events = failover(upstreams, params, retries=1, first_token_timeout=10)  # the same

Errors: ``pydantic.ValidationError`` (a ``ValueError``) naming the field for
a value out of bounds or an unknown name.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from pipeline.core.backoff import Backoff
from pipeline.runtime.continuation import DEFAULT_INSTRUCTION

__all__ = ["FailoverOptions"]


class FailoverOptions(BaseModel):
    """How :func:`~pipeline.runtime.failover.failover` retries and moves on; all have defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retries: int = Field(
        default=2, ge=0, description="retries per upstream after its first attempt"
    )
    backoff: float = Field(
        default=0.25, ge=0, description="seconds before the first retry, doubled per retry"
    )
    max_backoff: float = Field(default=4.0, ge=0, description="cap of the backoff (seconds)")
    jitter: float = Field(
        default=0.5, ge=0, le=1, description="largest share of a backoff taken off at random"
    )
    max_total: float = Field(
        default=30.0, gt=0, description="seconds from subscription in which an attempt may start"
    )
    max_wait: float = Field(
        default=2.0,
        ge=0,
        description="the longest wait before a retry: a longer Retry-After is not waited for",
    )
    first_token_timeout: float | None = Field(
        default=None, gt=0, description="seconds an attempt may wait for its first content"
    )
    idle_timeout: float | None = Field(
        default=None, gt=0, description="seconds an attempt may go without an event"
    )
    total_timeout: float | None = Field(
        default=None, gt=0, description="seconds an attempt may last in all"
    )
    continue_after_first_token: bool = Field(
        default=False,
        description="continue a cut answer on a new attempt (pipeline.runtime.continuation)",
    )
    max_continuations: int = Field(
        default=1, ge=0, description="new attempts after the first token, at most"
    )
    continuation_instruction: str | None = Field(
        default=DEFAULT_INSTRUCTION,
        description='sent to "instruction" upstreams to continue; "" or None: none',
    )
    continuation_max_overlap: int = Field(
        default=200, ge=0, description="characters the seam may trim from a continuation"
    )

    def replace(self, **changes: float | str | None) -> FailoverOptions:
        """A copy with ``changes``, validated like the fields given at creation."""
        if not changes:
            return self
        return FailoverOptions.model_validate({**self.model_dump(), **changes})

    def backoff_policy(self, random: Callable[[], float] = _random.random) -> Backoff:
        """The retries' :class:`~pipeline.core.backoff.Backoff` (``random`` draws the jitter)."""
        return Backoff(self.backoff, self.max_backoff, self.jitter, random)
