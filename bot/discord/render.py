"""Discord messages from swarm events and objective views: embeds, approval buttons, text."""
from __future__ import annotations

from dataclasses import dataclass

import discord

from bot import plain
from bot.checklist import seconds, step_facts
from bot.discord.buttons import ApprovalButton
from bot.discord.text import (
    EMBED_DESCRIPTION_CHARS,
    EMBED_FIELD_CHARS,
    EMBED_TITLE_CHARS,
    MESSAGE_CHARS,
    clip,
    split,
    user,
)
from swarm.events import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalReminder,
    ApprovalRequested,
    Digest,
    DriftDetected,
    Notice,
    ObjectiveAccepted,
    ObjectiveFinished,
    ObjectiveStateChanged,
    PlanProposed,
    QuestionAsked,
)
from swarm.store.views import ObjectiveView, StepView

FILE_CHARS = 8000  # longer results go up as one Markdown file instead of many messages
APPROVE_EMOJI = frozenset({"✅", "☑️", "✔️", "👍"})
REJECT_EMOJI = frozenset({"❌", "🚫", "👎"})
STATE_MARK = {"pending": "⚪", "ready": "⚪", "awaiting_approval": "🔒", "running": "🔄",
              "waiting_human": "💬", "finished": "✅", "failed": "❌", "skipped": "➖",
              "cancelled": "🚫", "planning": "💭", "paused": "⏸️",
              "waiting_team": "👥"}
COLOUR = {"finished": discord.Colour.green(), "failed": discord.Colour.red(),
          "cancelled": discord.Colour.dark_grey()}


@dataclass
class DiscordMessage:
    content: str = ""
    embed: discord.Embed | None = None
    buttons: int | None = None  # the approval id whose Approve / Reject buttons it carries
    file: tuple[str, str] | None = None  # (file name, Markdown text)

    def view(self) -> discord.ui.View | None:
        """Approve / Reject buttons carrying the approval's database id (see buttons.py)."""
        if self.buttons is None:
            return None
        view = discord.ui.View(timeout=None)
        view.add_item(ApprovalButton(self.buttons, approve=True))
        view.add_item(ApprovalButton(self.buttons, approve=False))
        return view


def accepted(ev: ObjectiveAccepted) -> DiscordMessage:
    return DiscordMessage(f"On it, {user(ev.requester)}: objective #{ev.objective_id}, "
                          f"*{clip(ev.goal, 500)}*. I'm planning; the plan comes here for "
                          f"approval.")


def plan(ev: PlanProposed) -> DiscordMessage:
    lines = [f"`{st.key}` **{clip(st.title, 120)}** — {st.role}"
             + (f" (after {', '.join(st.depends_on)})" if st.depends_on else "")
             + (" 🔒 asks approval" if st.needs_approval else "")
             + (" 👥 a team of its own" if st.team else "") for st in ev.steps]
    embed = discord.Embed(title=clip(f"Plan v{ev.version} for objective #{ev.objective_id} "
                                     f"({len(ev.steps)} steps)", EMBED_TITLE_CHARS),
                          description=clip(ev.rationale + "\n\n" + "\n".join(lines),
                                           EMBED_DESCRIPTION_CHARS))
    if ev.constraints:  # what the manager read as the goal's constraints, approved with it
        embed.add_field(name="Constraints", inline=False, value=clip(
            "\n".join(f"• {c}" for c in ev.constraints), EMBED_FIELD_CHARS))
    embed.set_footer(text="Approve or reject with the buttons, or react ✅ / ❌.")
    return DiscordMessage(f"Plan for objective #{ev.objective_id}: approve?", embed,
                          ev.approval_id)


def approval(ev: ApprovalRequested) -> DiscordMessage:
    embed = discord.Embed(title=f"🔒 Approval needed for objective #{ev.objective_id}",
                          description=clip(ev.title, EMBED_DESCRIPTION_CHARS))
    embed.set_footer(text="Approve or reject with the buttons, or react ✅ / ❌.")
    return DiscordMessage(f"Approval needed: {clip(ev.title, 200)}", embed, ev.approval_id)


def decided(ev: ApprovalDecided, view: ObjectiveView | None) -> DiscordMessage:
    """The approval message once decided: who, when and why, and no buttons left."""
    verb = "Approved" if ev.approved else "Rejected"
    mark = "✅" if ev.approved else "❌"
    line = f"{mark} {verb} by {user(ev.user)}"
    if ev.decided_at:
        line += f" {_when(ev.decided_at)}"
    if ev.reason:
        line += f": {clip(ev.reason, 300)}"
    description = line
    if ev.kind == "plan" and view is not None and view.steps:
        description += "\n\n" + "\n".join(f"`{st.key}` {clip(st.title, 120)} — {st.role}"
                                          for st in view.steps)
    embed = discord.Embed(title=clip(ev.title, EMBED_TITLE_CHARS),
                          description=clip(description, EMBED_DESCRIPTION_CHARS),
                          colour=discord.Colour.green() if ev.approved else
                          discord.Colour.red())
    return DiscordMessage(f"{verb} by {user(ev.user)}: {clip(ev.title, 200)}", embed)


def _when(at: str) -> str:
    """Discord's timestamp markup: each reader sees it in their own time zone."""
    from datetime import UTC, datetime

    moment = datetime.fromisoformat(at)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return f"<t:{int(moment.timestamp())}:f>"


def _step_line(st: StepView, team: ObjectiveView | None = None) -> str:
    return " · ".join([f"{STATE_MARK.get(st.state, '⚪')} `{st.key}` **{clip(st.title, 100)}** "
                       f"— {st.role}", *step_facts(st, team)])


def progress(view: ObjectiveView) -> DiscordMessage:
    """One embed: the goal, the checklist of steps, and the spend in the footer."""
    done = sum(st.state == "finished" for st in view.steps)
    checklist = "\n".join(_step_line(st, view.teams.get(st.id))
                          for st in view.steps) or "*no steps yet*"
    embed = discord.Embed(title=clip(f"{STATE_MARK.get(view.state, '')} Objective #{view.id} — "
                                     f"{view.goal}", EMBED_TITLE_CHARS),
                          description=clip(checklist, EMBED_DESCRIPTION_CHARS),
                          colour=COLOUR.get(view.state, discord.Colour.blurple()))
    embed.set_footer(text=f"{view.state.replace('_', ' ')} · {done}/{len(view.steps)} steps "
                          f"done · {view.tokens:,} tokens · {view.spend.show_cost()} · "
                          f"{seconds(view.elapsed_s)}")
    return DiscordMessage(f"Objective #{view.id}: {done}/{len(view.steps)} steps done", embed)


def question(ev: QuestionAsked) -> DiscordMessage:
    embed = discord.Embed(title=clip(f"💬 {ev.title} asks", EMBED_TITLE_CHARS),
                          description=clip(ev.question, EMBED_DESCRIPTION_CHARS))
    embed.set_footer(text="Reply in this thread (reply to this message, or mention me): the "
                          "next reply answers.")
    return DiscordMessage(f"Question: {clip(ev.question, 1800)}", embed)


def state_changed(ev: ObjectiveStateChanged) -> DiscordMessage:
    return DiscordMessage(f"{STATE_MARK.get(ev.state, '')} Objective #{ev.objective_id} is now "
                          f"**{ev.state.replace('_', ' ')}** ({clip(ev.reason or ev.actor, 500)})")


def notice(ev: Notice) -> DiscordMessage:
    return DiscordMessage(f"ℹ️ {clip(ev.text, MESSAGE_CHARS - 3)}")


SCHEDULED_MARK = {"ApprovalReminder": "⏰", "ApprovalExpired": "⌛", "DriftDetected": "⚠️",
                  "Digest": "📋"}


def scheduled(ev: ApprovalReminder | ApprovalExpired | DriftDetected | Digest
              ) -> DiscordMessage:
    """A scheduled event as bot/plain.py words it; a drift notice carries its approval's
    Approve (apply the correction) / Reject (continue as planned) buttons."""
    text = f"{SCHEDULED_MARK.get(ev.event_type, '')} {plain.plain(ev) or ''}"
    return DiscordMessage(clip(text, MESSAGE_CHARS),
                          buttons=ev.approval_id if isinstance(ev, DriftDetected) else None)


def summary(ev: ObjectiveFinished) -> str:
    mark = "🏁" if ev.state == "finished" else STATE_MARK.get(ev.state, "")
    return clip(f"{mark} **Objective #{ev.objective_id} {ev.state}**: {ev.summary}", 1500)


def results_size(ev: ObjectiveFinished) -> int:
    return sum(len(r.output) for r in ev.results)


def results(ev: ObjectiveFinished) -> list[DiscordMessage]:
    """The results as messages of at most 2000 characters, in order, cut on paragraphs; the
    first holds the summary. Past FILE_CHARS: the summary and one Markdown file."""
    if results_size(ev) > FILE_CHARS:
        return [DiscordMessage(summary(ev) + "\nThe full results are in the attached file.",
                               file=(f"objective-{ev.objective_id}-results.md",
                                     results_document(ev)))]
    text = summary(ev)
    for r in ev.results:
        text += (f"\n\n{STATE_MARK.get(r.state, '')} **{clip(r.title, 200)}** · {r.role} · "
                 f"{r.state}\n\n{r.output or '(no output)'}")
    return [DiscordMessage(piece) for piece in split(text, MESSAGE_CHARS)]


def results_document(ev: ObjectiveFinished) -> str:
    parts = [f"# Objective #{ev.objective_id}: {ev.state}", "", ev.summary]
    for r in ev.results:
        parts += ["", f"## {r.title} ({r.role}, {r.state})", "", r.output or "(no output)"]
    return "\n".join(parts) + "\n"

