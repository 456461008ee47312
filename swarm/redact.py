"""Secret redaction: applied to everything that leaves the process (chat, logs, memory)."""
from __future__ import annotations

import logging
import os
import re
from typing import Any

_PATTERNS = [
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_\-]{16,}",
    r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
    r"\bxapp-[A-Za-z0-9\-]{10,}",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bAIza[0-9A-Za-z_\-]{30,}",
    r"(?i:\bbearer\s+[A-Za-z0-9._\-]{16,})",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    r"(?i:\b(?:password|passwd|secret|api[_-]?key|token)\s*[:=]\s*[^\s,;]{6,})",
]
_ANY = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))  # one pass over the text, not nine
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$")
MASK = "[redacted]"


_env_cache: tuple[int, list[str]] = (-1, [])


def _env_secrets() -> list[str]:
    """Values of secret-looking variables; rescanned only when the environment grows or shrinks
    (redact runs dozens of times per chat event, a full scan each time showed in profiles)."""
    global _env_cache
    if _env_cache[0] != len(os.environ):
        values = [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8]
        _env_cache = (len(os.environ), values)
    return _env_cache[1]


def redact(text: str) -> str:
    for value in _env_secrets():
        text = text.replace(value, MASK)
    return _ANY.sub(MASK, text)


def redact_value(value: Any) -> Any:
    """Redact every string inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the formatted message before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
