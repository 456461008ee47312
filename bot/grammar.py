"""The `/swarm` grammar: words typed in any chat (or the console) -> one subcommand's form and
its values, or None when no form of it fits. Nothing here raises on what a user types."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# A form is a usage line: literal words (`a|b` for either), and placeholders for values.
ID, USER, AMOUNT, TEXT = "ID", "@USER", "AMOUNT", "TEXT"
PLACEHOLDERS = (ID, USER, AMOUNT, TEXT)

_ID = re.compile(r"#?(\d{1,40})")
# Slack escapes a mention as <@U123|name>, Discord as <@123> or <@!123>; a plain @name or id too
_USER = re.compile(r"<@!?([A-Za-z0-9]{1,64})(?:\|[^>]*)?>|@?([A-Za-z0-9][A-Za-z0-9._-]{0,63})")
_AMOUNT = re.compile(r"(\$)?(\d{1,15}(?:\.\d{1,6})?)(k|m)?(\$|usd|dollars?|tokens?)?",
                     re.IGNORECASE)
_UNIT = re.compile(r"\$|usd|dollars?|tokens?", re.IGNORECASE)
OFF = ("off", "none", "unlimited")


@dataclass(frozen=True)
class Amount:
    """A ceiling typed by a user: `$5`, `5 usd`, `20k tokens`; `off` (value None) clears it."""

    unit: str  # usd | tokens | off
    value: float | None = None


@dataclass(frozen=True)
class Match:
    """What a form captured: its literal words after the subcommand, and its values."""

    words: tuple[str, ...] = ()
    id: int | None = None
    user: str | None = None
    amount: Amount | None = None
    text: str | None = None
    flags: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Token:
    word: str
    start: int  # where it starts in the text: TEXT keeps what was typed, spacing included


def tokens(text: str) -> list[Token]:
    found = [Token(m.group(), m.start()) for m in re.finditer(r"\S+", text)]
    merged: list[Token] = []
    for tok in found:  # "5 usd", "20000 tokens": one amount
        if merged and _UNIT.fullmatch(tok.word) and re.fullmatch(r"\$?[\d.]+[km]?",
                                                                merged[-1].word, re.I):
            merged[-1] = Token(merged[-1].word + tok.word, merged[-1].start)
        else:
            merged.append(tok)
    return merged


def amount(word: str) -> Amount | None:
    if word.lower() in OFF:
        return Amount("off")
    m = _AMOUNT.fullmatch(word)
    if m is None or (m.group(1) is None and m.group(4) is None):
        return None  # a bare number: dollars or tokens? ask again
    value = float(m.group(2)) * {None: 1, "k": 1e3, "m": 1e6}[(m.group(3) or "").lower()
                                                            or None]
    unit = "tokens" if (m.group(4) or "").lower().startswith("token") else "usd"
    if unit == "tokens" and (m.group(1) or value != int(value)):
        return None
    return Amount(unit, value)


def user_ref(word: str) -> str | None:
    m = _USER.fullmatch(word)
    return None if m is None else (m.group(1) or m.group(2))


def match(form: str, words: list[Token], text: str) -> Match | None:
    """Match the words after the subcommand's name against one form (its usage line)."""
    parts = form.split()[1:]
    literals: list[str] = []
    values: dict[str, object] = {}
    flags: set[str] = set()
    i = 0
    for part in parts:
        if part == TEXT:
            if i >= len(words):
                return None
            values["text"] = text[words[i].start:].strip()
            i = len(words)
            continue
        if i >= len(words):
            return None
        word = words[i].word
        if part == ID:
            m = _ID.fullmatch(word)
            if m is None:
                return None
            values["id"] = int(m.group(1))
        elif part == USER:
            if (ref := user_ref(word)) is None:
                return None
            values["user"] = ref
        elif part == AMOUNT:
            if (got := amount(word)) is None:
                return None
            values["amount"] = got
        elif part.startswith("--"):
            if word.lower() != part:
                return None
            flags.add(part)
        else:
            if word.lower() not in part.split("|"):
                return None
            literals.append(word.lower())
        i += 1
    if i != len(words):
        return None
    return Match(tuple(literals), flags=frozenset(flags), **values)  # type: ignore[arg-type]
