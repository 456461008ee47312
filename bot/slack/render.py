"""Block Kit messages from swarm events and objective views."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    PlanBlock,
    RichTextBlock,
    RichTextSectionElement,
    TaskCardBlock,
)
from slack_sdk.models.blocks.block_elements import RichTextElementParts

from bot import plain
from bot.checklist import seconds, step_facts
from bot.slack.text import escape, mrkdwn, split, user, when
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
from swarm.redact import redact
from swarm.store.views import ObjectiveView, StepView

# Slack's limits: 3000 characters per section text, 50 blocks per message; the total text of a
# message's blocks is kept well under the ~13k Slack starts refusing (msg_blocks_too_long).
SECTION_CHARS = 3000
MESSAGE_BLOCKS = 45
MESSAGE_CHARS = 12_000
FILE_CHARS = 40_000  # longer results go up as one Markdown file instead of many messages
APPROVE, REJECT = "approve", "reject"
APPROVE_REACTIONS = frozenset({"white_check_mark", "heavy_check_mark", "+1"})
REJECT_REACTIONS = frozenset({"x", "no_entry_sign", "-1"})
STATE_MARK = {"pending": ":white_circle:", "ready": ":white_circle:",
              "awaiting_approval": ":lock:", "running": ":arrows_counterclockwise:",
              "waiting_human": ":speech_balloon:", "waiting_team": ":busts_in_silhouette:",
              "finished": ":white_check_mark:",
              "failed": ":x:", "skipped": ":heavy_minus_sign:", "cancelled": ":no_entry_sign:",
              "planning": ":thought_balloon:", "paused": ":double_vertical_bar:"}
Block = dict[str, Any]


@dataclass(frozen=True)
class SlackMessage:
    text: str  # the notification / fallback text
    blocks: list[Block]


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_CHARS]}}


def context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:SECTION_CHARS]}]}


def action_id(verb: str, approval_id: int) -> str:
    return f"{verb}:{approval_id}"


def parse_action_id(value: str) -> tuple[bool, int] | None:
    verb, _, rest = value.partition(":")
    if verb not in (APPROVE, REJECT) or not rest.isdigit():
        return None
    return verb == APPROVE, int(rest)


def buttons(approval_id: int) -> Block:
    # The approval's database id rides in action_id and value: a click works after a restart.
    return {"type": "actions", "block_id": f"approval:{approval_id}", "elements": [
        {"type": "button", "style": "primary", "action_id": action_id(APPROVE, approval_id),
         "value": str(approval_id), "text": {"type": "plain_text", "text": "Approve"}},
        {"type": "button", "style": "danger", "action_id": action_id(REJECT, approval_id),
         "value": str(approval_id), "text": {"type": "plain_text", "text": "Reject"}}]}


REJECT_VIEW, REASON_BLOCK, REASON_INPUT = "reject_plan", "reason", "reason_text"


def reject_modal(approval_id: int, channel: str, thread_ts: str | None) -> dict[str, Any]:
    """Rejecting a plan asks why: with a reason the manager replans from it."""
    return {"type": "modal", "callback_id": REJECT_VIEW,
            "private_metadata": json.dumps({"approval": approval_id, "channel": channel,
                                            "thread_ts": thread_ts}),
            "title": {"type": "plain_text", "text": "Reject the plan"},
            "submit": {"type": "plain_text", "text": "Reject"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [{"type": "input", "block_id": REASON_BLOCK, "optional": True,
                        "label": {"type": "plain_text", "text": "What should change?"},
                        "hint": {"type": "plain_text", "text": "The manager makes a new plan "
                                 "from this. Leave it empty to stop the objective."},
                        "element": {"type": "plain_text_input", "action_id": REASON_INPUT,
                                    "multiline": True, "max_length": 2000}}]}


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def accepted(ev: ObjectiveAccepted) -> SlackMessage:
    text = (f"On it, {user(ev.requester)}: objective #{ev.objective_id}, "
            f"_{escape(_clip(ev.goal, 500))}_. I'm planning; the plan comes here for approval.")
    return SlackMessage(f"Objective #{ev.objective_id}: planning", [section(text)])


def plan(ev: PlanProposed) -> SlackMessage:
    lines = [f"• `{st.key}` *{escape(_clip(st.title, 120))}* — {escape(st.role)}"
             + (f" (after {', '.join(st.depends_on)})" if st.depends_on else "")
             + (" :lock: asks approval" if st.needs_approval else "")
             + (" :busts_in_silhouette: a team of its own" if st.team else "")
             for st in ev.steps]
    blocks = [section(f"*Plan v{ev.version} for objective #{ev.objective_id}* "
                      f"({len(ev.steps)} steps)\n{escape(_clip(ev.rationale, 600))}"),
              section("\n".join(lines))]
    if ev.constraints:  # approved with the plan, and what grounding checks hold it to
        blocks.append(section("*Constraints*\n" + "\n".join(
            f"• {escape(_clip(c, 300))}" for c in ev.constraints[:20])))
    blocks += [
              buttons(ev.approval_id),
              context("Approve or reject with the buttons, or react :white_check_mark: / :x:.")]
    return SlackMessage(f"Plan for objective #{ev.objective_id}: approve?", blocks)


def reminder(ev: ApprovalReminder) -> SlackMessage:
    return SlackMessage(_clip(plain.reminder(ev), 200), [
        section(f":alarm_clock: *Still waiting for a decision* (objective #{ev.objective_id}, "
                f"{plain.duration(ev.waiting_s)})\n{escape(_clip(ev.title, 500))}"),
        buttons(ev.approval_id),
        context(f"It expires in {plain.duration(ev.expires_in_s)}: nothing it asks for runs "
                f"until someone decides.")])


def expired(ev: ApprovalExpired) -> SlackMessage:
    """Replaces the approval's own message: its buttons are gone."""
    return SlackMessage(_clip(plain.expired(ev), 200), [
        section(f"*{escape(_clip(ev.title, 500))}*"),
        context(f":hourglass: Expired after {plain.duration(ev.waited_s)} without a decision: "
                f"it did not run and objective #{ev.objective_id} is paused. An admin can "
                f"resume it; the {ev.kind} is then asked again.")])


def drift(ev: DriftDetected) -> SlackMessage:
    lines = [f":warning: *Drift detected* in objective #{ev.objective_id} "
             f"({ev.signal}, score {ev.score:.2f})\n{escape(_clip(ev.drifted, 800))}"]
    violated = "\n".join(f"• *{escape(_clip(v.constraint, 200))}* {v.status.replace('_', ' ')}: "
                         f"_{escape(_clip(v.evidence, 400))}_" for v in ev.violated[:10])
    blocks = [section(lines[0])]
    if violated:
        blocks.append(section(violated))
    if ev.held:
        blocks.append(context("Held until you decide: " + escape(_clip(", ".join(ev.held),
                                                                       600))))
    blocks += [section(f"*Suggested correction*\n{escape(_clip(ev.correction, 1000))}"),
               buttons(ev.approval_id),
               context("Approve applies the correction to the remaining steps; reject continues "
                       f"as planned; `/swarm cancel {ev.objective_id}` stops it.")]
    return SlackMessage(f"Drift detected in objective #{ev.objective_id}", blocks)


def digest(ev: Digest) -> SlackMessage:
    return SlackMessage("Status digest", [section(":clipboard: *Status digest*"),
                                          section(escape(plain.digest(ev)))])


def scheduled(ev: ApprovalReminder | ApprovalExpired | DriftDetected | Digest) -> SlackMessage:
    """What the schedules bring to a thread (bot/routing.py says where each goes)."""
    match ev:
        case ApprovalReminder():
            return reminder(ev)
        case ApprovalExpired():
            return expired(ev)
        case DriftDetected():
            return drift(ev)
    return digest(ev)


def approval(ev: ApprovalRequested) -> SlackMessage:
    return SlackMessage(f"Approval needed: {ev.title}", [
        section(f":lock: *Approval needed* for objective #{ev.objective_id}\n"
                f"{escape(_clip(ev.title, 500))}"),
        buttons(ev.approval_id),
        context("Approve or reject with the buttons, or react :white_check_mark: / :x:.")])


def decided(ev: ApprovalDecided, view: ObjectiveView | None) -> SlackMessage:
    verb = "Approved" if ev.approved else "Rejected"
    mark = ":white_check_mark:" if ev.approved else ":x:"
    line = f"{mark} {verb} by {user(ev.user)} {when(ev.decided_at)}".rstrip()
    if ev.reason:
        line += f": {escape(_clip(ev.reason, 300))}"
    blocks = [section(f"*{escape(_clip(ev.title, 500))}*")]
    if ev.kind == "plan" and view is not None and view.steps:
        blocks.append(section("\n".join(f"• `{st.key}` {escape(_clip(st.title, 120))} — "
                                        f"{escape(st.role)}" for st in view.steps)))
    blocks.append(context(line))
    return SlackMessage(f"{verb} by {ev.user}: {ev.title}", blocks)


def _step_line(st: StepView, team: ObjectiveView | None = None) -> str:
    return " · ".join([f"{STATE_MARK.get(st.state, ':white_circle:')} `{st.key}` "
                       f"*{escape(_clip(st.title, 100))}* — {escape(st.role)}",
                       *step_facts(st, team)])


def progress(view: ObjectiveView) -> SlackMessage:
    done = sum(st.state == "finished" for st in view.steps)
    head = (f"{STATE_MARK.get(view.state, '')} *Objective #{view.id}* — "
            f"{escape(_clip(view.goal, 300))}")
    spend = (f"{view.state.replace('_', ' ')} · {done}/{len(view.steps)} steps done · "
             f"{view.tokens:,} tokens · {view.spend.show_cost()} · {seconds(view.elapsed_s)}")
    checklist = "\n".join(_step_line(st, view.teams.get(st.id))
                          for st in view.steps) or "_no steps yet_"
    return SlackMessage(f"Objective #{view.id}: {done}/{len(view.steps)} steps done",
                        [section(head), section(checklist), context(spend)])


# A step's state as a task card shows it (Slack knows four); the card's details say the rest.
TASK_STATUS = {"running": "in_progress", "waiting_human": "in_progress",
               "waiting_team": "in_progress", "finished": "complete",
               "skipped": "complete", "failed": "error", "cancelled": "error"}
PLAN_TASKS = 50  # Slack's most task cards in one plan block
TASK_TITLE_CHARS, TASK_TEXT_CHARS = 150, 300


def _rich(text: str) -> RichTextBlock:
    return RichTextBlock(elements=[RichTextSectionElement(
        elements=[RichTextElementParts.Text(text=text)])])


def _task(st: StepView, team: ObjectiveView | None = None) -> TaskCardBlock:
    details = [st.role, *step_facts(st, team)]
    # plain text, not mrkdwn: nothing to escape; redacted like every other message
    shown = st.error if st.state == "failed" else st.output if st.state == "finished" else None
    output = _rich(_clip(redact(" ".join(shown.split())), TASK_TEXT_CHARS)) if shown else None
    return TaskCardBlock(task_id=st.key, title=_clip(f"{st.key} {st.title}", TASK_TITLE_CHARS),
                         status=TASK_STATUS.get(st.state, "pending"),
                         details=_rich(" · ".join(details)), output=output)


def progress_plan(view: ObjectiveView) -> SlackMessage:
    """The progress message as Slack's agent UI shows a plan: a plan block, one task card per
    step. Workspaces whose Slack refuses it (invalid_blocks) get progress() instead."""
    shown = view.steps[:PLAN_TASKS]
    message = progress(view)
    title = _clip(f"Objective #{view.id} — {view.goal}", TASK_TITLE_CHARS)
    tasks = [_task(st, view.teams.get(st.id)) for st in shown]
    blocks: list[Block] = [PlanBlock(title=title, tasks=tasks).to_dict()]
    if len(view.steps) > len(shown):
        blocks.append(context(f"…and {len(view.steps) - len(shown)} more steps"))
    return SlackMessage(message.text, blocks + [message.blocks[-1]])  # and the spend line


def question(ev: QuestionAsked) -> SlackMessage:
    return SlackMessage(f"Question: {ev.question}", [
        section(f":speech_balloon: *{escape(_clip(ev.title, 200))}* asks:\n"
                f"{escape(_clip(ev.question, 2000))}"),
        context("Reply in this thread: the next reply answers.")])


def state_changed(ev: ObjectiveStateChanged) -> SlackMessage:
    text = (f"{STATE_MARK.get(ev.state, '')} Objective #{ev.objective_id} is now "
            f"*{ev.state.replace('_', ' ')}* ({escape(ev.reason or ev.actor)})")
    return SlackMessage(f"Objective #{ev.objective_id} {ev.state}", [section(text)])


def notice(ev: Notice) -> SlackMessage:
    return SlackMessage(_clip(ev.text, 200), [section(f":information_source: {escape(ev.text)}")])


def summary(ev: ObjectiveFinished) -> str:
    mark = ":checkered_flag:" if ev.state == "finished" else STATE_MARK.get(ev.state, "")
    return (f"{mark} *Objective #{ev.objective_id} {ev.state}*: {escape(ev.summary)}")


def results_size(ev: ObjectiveFinished) -> int:
    return sum(len(r.output) for r in ev.results)


def results(ev: ObjectiveFinished) -> list[SlackMessage]:
    """The results as messages within Slack's limits, in order; the first holds the summary."""
    blocks: list[Block] = [section(summary(ev))]
    for r in ev.results:
        blocks.append(section(f"{STATE_MARK.get(r.state, '')} *{escape(_clip(r.title, 200))}* "
                              f"· {escape(r.role)} · {r.state}"))
        blocks += [section(piece) for piece in split(mrkdwn(r.output or "(no output)"),
                                                      SECTION_CHARS)]
    messages: list[list[Block]] = [[]]
    size = 0
    for block in blocks:
        chars = len(block["text"]["text"])
        if messages[-1] and (len(messages[-1]) >= MESSAGE_BLOCKS or size + chars > MESSAGE_CHARS):
            messages.append([])
            size = 0
        messages[-1].append(block)
        size += chars
    n = len(messages)
    return [SlackMessage(f"Objective #{ev.objective_id} {ev.state}: results"
                         + (f" ({i}/{n})" if n > 1 else ""), m)
            for i, m in enumerate(messages, 1)]


def results_document(ev: ObjectiveFinished) -> str:
    """The full results as one Markdown document (uploaded as a file when very long)."""
    parts = [f"# Objective #{ev.objective_id}: {ev.state}", "", ev.summary]
    for r in ev.results:
        parts += ["", f"## {r.title} ({r.role}, {r.state})", "", r.output or "(no output)"]
    return "\n".join(parts) + "\n"
