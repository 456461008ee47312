"""Secret redaction: applied to everything that leaves the process (chat, logs, memory, and
model prompts with THREADSWARM_REDACT_PROMPTS)."""
from __future__ import annotations

import logging
import os
import re
from typing import Any

from swarm.config import SettingsError

_PATTERNS = [
    r"\bsk-(?:proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}",  # OpenAI, Anthropic
    r"\bxox[abposre]-[A-Za-z0-9\-]{10,}",  # Slack bot, user, app-config and refresh tokens
    r"\bxoxe\.xox[bp]-[A-Za-z0-9\-]{10,}",  # Slack rotating tokens
    r"\bxapp-[A-Za-z0-9\-]{10,}",
    r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_\-]+",
    r"\b[MNO][A-Za-z0-9_\-]{23,27}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,}",  # Discord bot
    r"https://(?:\w+\.)?discord(?:app)?\.com/api/webhooks/\d+/[A-Za-z0-9_\-]+",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{22,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"(?i:\baws_?secret_?access_?key\b\W{0,3}[A-Za-z0-9/+=]{40})",
    r"\bAIza[0-9A-Za-z_\-]{30,}",
    r"(?i:\bbearer\s+[A-Za-z0-9._\-]{16,})",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    r"(?i:\b(?:password|passwd|secret|api[_-]?key|token)\s*[:=]\s*[^\s,;]{6,})",
]
_ANY = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))  # one pass over the text, not many
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


def configure(extra: list[str]) -> None:
    """Add a deployment's own secret shapes (THREADSWARM_REDACT_PATTERNS) to the built-in ones.
    A pattern that is not a regular expression raises SettingsError naming it."""
    global _ANY
    for pattern in extra:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise SettingsError(f"THREADSWARM_REDACT_PATTERNS: {pattern!r} is not a regular "
                             f"expression ({exc})") from exc
    _ANY = re.compile("|".join(f"(?:{p})" for p in [*_PATTERNS, *extra]))


def redact(text: str) -> str:
    for value in _env_secrets():
        text = text.replace(value, MASK)
    return _ANY.sub(MASK, text)


def redact_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A prompt's messages with their text redacted (THREADSWARM_REDACT_PROMPTS)."""
    return [{**m, "content": redact(m["content"])} if isinstance(m.get("content"), str) else m
            for m in messages]


def redact_value(value: Any) -> Any:
    """Redact every string inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def _clean(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it itself
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None


_factory_installed = False


def install_log_redaction() -> None:
    """Redact every log record as it is made, whichever handler (ours, a library's, a test's
    capture) gets it. Idempotent."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _clean(record)
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the formatted message before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        _clean(record)
        return True
