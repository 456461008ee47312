"""The platform-neutral admin commands (`/swarm ...` on Slack), on both databases."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import commands
from bot.commands import COMMANDS, CommandReply, Invocation, Parsed, handle, parse
from swarm.services.objectives import Swarm
from swarm.store.models import ThreadRef
from tests.scenarios import outbox_kinds

TEAM, OTHER_TEAM = "T0TEAM", "T0OTHER"
THREAD = ThreadRef("slack", TEAM, "C0GENERAL", "1600000001.000001")


async def start(swarm: Swarm, goal: str = "launch our SaaS in Japan", team: str = TEAM,
                key: str = "evt-1") -> int:
    thread = ThreadRef("slack", team, "C0GENERAL", key)
    started = await swarm.start_objective(goal, thread, "U0ALICE", key)
    await swarm.join()
    return started.objective_id


async def test_help_and_unknown_subcommands_list_what_there_is(swarm: Swarm) -> None:
    for text in ("", "help", "HELP"):
        reply = await handle(swarm, "U0ALICE", TEAM, text)
        assert reply.ephemeral and "`status [ID]`" in reply.text and "`cancel ID`" in reply.text
    unknown = await handle(swarm, "U0ALICE", TEAM, "frobnicate 3")
    assert unknown.ephemeral and unknown.text.startswith("I don't know `frobnicate`")
    assert "`list [--all]`" in unknown.text


async def test_list_and_status_show_only_this_teams_objectives(swarm: Swarm) -> None:
    assert "No objectives yet" in (await handle(swarm, "U0ALICE", TEAM, "list")).text
    assert "Nothing is running" in (await handle(swarm, "U0ALICE", TEAM, "status")).text
    mine = await start(swarm)
    theirs = await start(swarm, "their secret plan", team=OTHER_TEAM, key="evt-2")
    listed = await handle(swarm, "U0ALICE", TEAM, "list")
    assert f"#{mine} awaiting_approval · 0/5 steps" in listed.text
    assert "their secret plan" not in listed.text and listed.ephemeral
    active = await handle(swarm, "U0ALICE", TEAM, "status")
    assert f"#{mine}" in active.text and f"#{theirs}" not in active.text
    one = await handle(swarm, "U0ALICE", TEAM, f"status #{mine}")
    assert "s1 pending · researcher · Research the context" in one.text
    hidden = await handle(swarm, "U0ALICE", TEAM, f"status {theirs}")
    assert hidden.text.startswith(f"There is no objective #{theirs} here")
    assert "That is not how `status` goes" in (await handle(swarm, "U0ALICE", TEAM,
                                                          "status soon")).text


async def test_cancel_is_for_the_requester_or_an_admin(swarm: Swarm) -> None:
    oid = await start(swarm)
    refused = await handle(swarm, "U0MALLORY", TEAM, f"cancel {oid}")
    assert refused.ephemeral and refused.text.startswith("Only the requester")
    assert swarm.view(oid).state == "awaiting_approval"  # type: ignore[union-attr]
    done = await handle(swarm, "U0ALICE", TEAM, f"cancel {oid}")
    assert done == CommandReply(f"Objective #{oid} cancelled.", ephemeral=False)
    again = await handle(swarm, "U0ALICE", TEAM, f"cancel {oid}")
    assert again.ephemeral and "already cancelled" in again.text
    other = await start(swarm, key="evt-3")
    swarm.settings.approvers = ["U0CAROL"]  # approvers decide approvals, nothing more
    assert (await handle(swarm, "U0CAROL", TEAM, f"cancel {other}")).ephemeral
    swarm.settings.admins = ["U0BOSS"]
    assert not (await handle(swarm, "U0BOSS", TEAM, f"cancel {other}")).ephemeral
    assert "`cancel ID`" in (await handle(swarm, "U0ALICE", TEAM, "cancel")).text


@pytest.fixture
def extra_command() -> Iterator[None]:
    yield
    commands.COMMANDS.pop("ping", None)


async def test_a_new_subcommand_is_one_decorated_function(swarm: Swarm,
                                                          extra_command: None) -> None:
    @commands.command("ping", "ping", "check that I am here")
    async def ping(inv: Invocation) -> CommandReply:
        return CommandReply(f"pong for {inv.user} ({' '.join(inv.args)})")

    assert (await handle(swarm, "U0ALICE", TEAM, "ping a b")).text == "pong for U0ALICE (a b)"
    assert "`ping` — check that I am here" in (await handle(swarm, "U0ALICE", TEAM, "help")).text


async def test_ids_past_64_bits_name_nothing_and_break_nothing(swarm: Swarm) -> None:
    huge = "123456789012345678901234567890"
    reply = await handle(swarm, "U0ALICE", TEAM, f"status {huge}")
    assert reply.text == f"There is no objective #{huge} here (`list` shows this team's)."
    assert (await handle(swarm, "U0ALICE", TEAM, f"cancel {huge}")).text == reply.text
    decided = await swarm.decide(int(huge), "U0ALICE", True)  # e.g. from a forged action_id
    assert not decided.ok and decided.message == f"There is no approval #{huge}."
    assert not (await swarm.cancel(2**64, "U0ALICE")).ok


async def test_a_reply_that_echoes_what_was_typed_is_redacted(swarm: Swarm) -> None:
    reply = await handle(swarm, "U0ALICE", TEAM, "xoxb-1234567890-abcdefghijkl please")
    assert "xoxb-1234567890-abcdefghijkl" not in reply.text and "[redacted]" in reply.text


async def test_status_picture_posts_a_picture_in_the_objectives_own_thread(swarm: Swarm) -> None:
    mine = await start(swarm)
    theirs = await start(swarm, "their secret plan", team=OTHER_TEAM, key="evt-2")
    reply = await handle(swarm, "U0ALICE", TEAM, f"status {mine} --picture")
    assert "s1 pending · researcher" in reply.text and "on its way to its thread" in reply.text
    assert outbox_kinds(swarm, mine)[-1] == "PictureRequested"
    hidden = await handle(swarm, "U0ALICE", TEAM, f"status --picture {theirs}")
    assert hidden.text.startswith(f"There is no objective #{theirs} here")
    assert "PictureRequested" not in outbox_kinds(swarm, theirs)
    assert "`status 12 --picture`" in (await handle(swarm, "U0ALICE", TEAM, "status --picture")
                                       ).text


WORDS = st.sampled_from(sorted(COMMANDS) + ["set", "add", "remove", "show", "list", "verify",
                                            "--all", "objective", "team", "search"])
TEXT = st.one_of(st.text(), st.lists(st.one_of(WORDS, st.text(max_size=12),
                                               st.from_regex(r"[#$<@]?\d{1,25}(k|usd|>)?")),
                                     max_size=6).map(" ".join))


@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_the_parser_answers_anything_with_a_command_or_its_help(text: str) -> None:
    parsed = parse(text)
    assert isinstance(parsed, Parsed | CommandReply)
    if isinstance(parsed, CommandReply):
        assert parsed.ephemeral and ("Commands:" in parsed.text or "That is not how" in parsed.text)
    else:  # a form matched: its name was typed, and what it captured is well-formed
        assert text.split()[0].lower() == parsed.command.name
        if parsed.match.id is not None:
            assert parsed.match.id >= 0
        if parsed.match.amount is not None:
            assert parsed.match.amount.unit in ("usd", "tokens", "off")


async def test_an_adapter_may_state_the_platforms_facts_as_keywords(swarm: Swarm) -> None:
    oid = await start(swarm)
    refused = await handle(swarm, "U0OWNER", TEAM, f"cancel {oid}", platform="discord")
    assert refused.text.startswith("Only the requester or an admin")
    done = await handle(swarm, "U0OWNER", TEAM, f"cancel {oid}", platform="discord",
                        platform_admin=True, channel_id="C1")
    assert done.text == f"Objective #{oid} cancelled."
    assert "U0OWNER" in (await handle(swarm, "U0OWNER", TEAM, f"audit {oid}")).text
