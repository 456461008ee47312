"""Structured log lines for the memory package: an event name plus key=value fields."""

from __future__ import annotations

import logging
from typing import Any


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log `event` as logfmt text; the fields also ride on the record for JSON formatters."""
    if not logger.isEnabledFor(level):
        return
    text = " ".join(f"{key}={value}" for key, value in fields.items())
    logger.log(level, "%s %s", event, text, extra={"event": event, "fields": fields}, stacklevel=2)
