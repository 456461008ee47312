"""Long text for Discord: cut on paragraph boundaries, within 2000 characters, nothing lost."""
from __future__ import annotations

from bot.discord.text import split, without_mention


def test_paragraphs_stay_whole_where_they_fit_and_nothing_is_lost() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * (40 + 37 * i % 300) for i in range(30)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    pieces = split(text, 2000)
    assert len(pieces) > 1 and all(len(p) <= 2000 for p in pieces)
    for p in paragraphs:  # each fits in a message, so each is in exactly one piece
        assert sum(p.strip() in piece for piece in pieces) == 1
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")


def test_a_line_longer_than_a_message_is_cut_and_kept_in_order() -> None:
    text = "intro\n\n" + "x" * 4500 + "\nafter"
    pieces = split(text, 2000)
    assert all(len(p) <= 2000 for p in pieces)
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")


def test_the_bots_mention_is_dropped_in_either_form() -> None:
    assert without_mention("<@42> launch  it <@!42>", 42) == "launch it"
    assert without_mention("<@7> hi", 42) == "<@7> hi"
