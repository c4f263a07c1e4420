"""Keeping stream capabilities out of the access log.

A stream's read capability (``?access=...&expires=...``, see
:mod:`pipeline.apps.server.bearer_auth`) travels in the URL, because an
``EventSource`` can send no header; uvicorn's access log writes every URL
whole, so anyone reading the log could read the stream for an hour.
:class:`RedactCapabilities` masks the ``access`` value in each line.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactCapabilities", "redact_access_log"]

_ACCESS = re.compile(r"([?&]access=)[^&\s]*")


class RedactCapabilities(logging.Filter):
    """A filter for ``uvicorn.access``: ``?access=<hmac>`` becomes ``?access=***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "access=" in a for a in args):
            record.args = tuple(_ACCESS.sub(r"\1***", a) if isinstance(a, str) else a for a in args)
        return True


def redact_access_log(logger: logging.Logger | None = None) -> None:
    """Install :class:`RedactCapabilities` on ``logger`` (default: ``uvicorn.access``), once."""
    logger = logger or logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactCapabilities) for f in logger.filters):
        logger.addFilter(RedactCapabilities())
