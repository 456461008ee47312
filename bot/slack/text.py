"""Text between Slack and the swarm: Slack's markup to plain text, and Markdown to mrkdwn."""
from __future__ import annotations

import re
from datetime import UTC, datetime

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_ANGLE = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def from_slack(text: str, *, drop_user: str | None = None) -> str:
    """Slack's message markup as plain text; `drop_user`'s mentions (the bot's) are removed."""
    def plain(m: re.Match[str]) -> str:
        target, label = m.group(1), m.group(2)
        if target.startswith("@"):
            return "" if target[1:] == drop_user else f"@{label or target[1:]}"
        if target.startswith("#"):
            return f"#{label or target[1:]}"
        if target.startswith("!"):
            return f"@{label or target[1:].split('^')[0]}"
        return f"{label} ({target})" if label else target

    text = _ANGLE.sub(plain, text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def escape(text: str) -> str:
    """Plain text made safe for mrkdwn: Slack reads only these three as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(markdown: str) -> str:
    """A worker's Markdown as Slack mrkdwn: headings and **bold** become *bold*."""
    lines = []
    for line in escape(markdown).splitlines():
        if heading := _HEADING.match(line):
            line = f"*{heading.group(1).strip()}*"
        lines.append(_BOLD.sub(r"*\1*", line))
    return "\n".join(lines)


def is_user_id(name: str) -> bool:
    return bool(_USER_ID.match(name))


def user(name: str) -> str:
    """A swarm user as Slack shows it: a mention for a Slack user id, else the name itself."""
    return f"<@{name}>" if is_user_id(name) else escape(name)


def when(at: str | None) -> str:
    """A UTC ISO time in each reader's own time zone (Slack's date token), with a fallback."""
    if not at:
        return ""
    moment = datetime.fromisoformat(at)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def split(text: str, limit: int) -> list[str]:
    """Cut text into pieces of at most `limit` characters, at line ends where it can."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:  # a line longer than a piece: cut it, avoiding an &entity;
            cut = limit
            amp = line.rfind("&", max(0, limit - 5), limit)
            if amp != -1 and ";" not in line[amp:limit]:
                cut = amp
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:cut])
            line = line[cut:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            pieces.append(current)
            current = line
        else:
            current = candidate
    if current.strip():
        pieces.append(current)
    return pieces
