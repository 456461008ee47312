"""Text for Discord: its limits, mentions, and long text cut on paragraph boundaries."""
from __future__ import annotations

import re

MESSAGE_CHARS = 2000  # a message's content
EMBED_DESCRIPTION_CHARS = 4096
EMBED_TITLE_CHARS = 256
EMBED_FIELD_CHARS = 1024
EMBED_FOOTER_CHARS = 2048
EMBED_TOTAL_CHARS = 6000
_SNOWFLAKE = re.compile(r"^\d{15,21}$")


def clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def user(name: str) -> str:
    """A swarm user as Discord shows it: a mention for a user id, else the name itself."""
    return f"<@{name}>" if _SNOWFLAKE.match(name) else name


def without_mention(content: str, bot_id: int | None) -> str:
    """A message's content without the bot's mention (either form Discord writes)."""
    if bot_id is not None:
        content = content.replace(f"<@{bot_id}>", "").replace(f"<@!{bot_id}>", "")
    return re.sub(r"[ \t]{2,}", " ", content).strip()


def split(text: str, limit: int = MESSAGE_CHARS) -> list[str]:
    """Pieces of at most `limit` characters: whole paragraphs where they fit, else whole lines,
    else hard cuts; nothing is lost but the blank lines between pieces."""
    pieces: list[str] = []
    current = ""
    for unit in _units(text, limit):
        sep = "\n\n" if unit.startswith("\x00") else "\n"
        unit = unit.lstrip("\x00")
        candidate = f"{current}{sep}{unit}" if current else unit
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        current = unit
    if current.strip():
        pieces.append(current)
    return pieces


def _units(text: str, limit: int) -> list[str]:
    """Paragraphs (marked with a leading NUL), split into lines and cuts when too long."""
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip("\n")):
        lines = [paragraph] if len(paragraph) <= limit else paragraph.split("\n")
        for i, line in enumerate(lines):
            cuts = [line[j:j + limit] for j in range(0, len(line), limit)] or [""]
            for k, cut in enumerate(cuts):
                units.append(("\x00" if i == 0 and k == 0 else "") + cut)
    return units
