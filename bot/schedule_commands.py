"""`/swarm` subcommands of the schedules: `digest CRON|off`, `every CRON GOAL [--policy ...]
[--budget USD] [--tier TIER]`, `every list`, `every remove ID`, `ground ID`. They register on
import (bot/commands.py imports this module), like every subcommand, through `@command`."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot.commands import CommandReply, Invocation, command, objective_of
from schedules import cron
from schedules.clock import running
from schedules.grounding import grounder_for
from schedules.recurring import POLICIES, TIERS
from schedules.sync import DIGEST_JOB, RECURRING_JOB, sync_jobs
from schedules.tables import DigestSchedule, RecurringGoal
from swarm.contract import ThreadRef, UserError
from swarm.redact import redact
from swarm.services.policy import admin_refusal
from swarm.store.models import Objective

NO_CHANNEL = "Type this in the channel it is for."


def _admin(inv: Invocation) -> bool:
    with inv.swarm.db.read() as s:
        return inv.swarm.policy.is_admin(s, inv.actor)


def _channel(inv: Invocation) -> ThreadRef | CommandReply:
    who = inv.actor
    if not who.channel_id:
        return CommandReply(NO_CHANNEL)
    if not _admin(inv):
        return CommandReply(admin_refusal("set a channel's schedules"))
    return ThreadRef(who.platform, who.team_id, who.channel_id, "")


def _next_run(job_id: str) -> str:
    clock = running()
    job = clock.scheduler.get_job(job_id) if clock is not None else None
    when = getattr(job, "next_run_time", None)
    return f" · next {when:%Y-%m-%d %H:%M:%S} UTC" if when is not None else ""


def _sync() -> None:
    if (clock := running()) is not None:
        sync_jobs(clock)


@command("digest", "digest [CRON | off]", "this channel's status digest on a cron (admins)")
async def digest(inv: Invocation) -> CommandReply:
    where = _channel(inv)
    if isinstance(where, CommandReply):
        return where
    if not inv.args:
        return CommandReply("Give a cron, e.g. `digest 0 9 * * 1-5`, or `digest off`.")
    text = " ".join(inv.args)
    here = (DigestSchedule.platform == where.platform, DigestSchedule.team_id == where.team_id,
            DigestSchedule.channel_id == where.channel_id)
    db = inv.swarm.db
    if text.lower() == "off":
        with db.tx() as s:
            row = s.scalar(select(DigestSchedule).where(*here))
            if row is not None:
                s.delete(row)
        _sync()
        return CommandReply("This channel's digest is off." if row is not None
                            else "This channel has no digest.", ephemeral=row is None)
    try:
        cron.trigger(text)
    except UserError as exc:
        return CommandReply(str(exc))
    try:
        with db.tx() as s:
            row = s.scalar(select(DigestSchedule).where(*here))
            if row is None:
                row = DigestSchedule(platform=where.platform, team_id=where.team_id,
                                     channel_id=where.channel_id, cron=text, created_by=inv.user)
                s.add(row)
            else:
                row.cron, row.created_by = text, inv.user
            s.flush()
            digest_id = row.id
    except IntegrityError:  # set at the same moment by someone else: theirs stands
        return CommandReply("Someone set this channel's digest at the same moment; "
                            "try again.")
    _sync()
    next_run = _next_run(DIGEST_JOB + str(digest_id))
    return CommandReply(f"Digest for this channel: `{text}` (UTC){next_run}.", ephemeral=False)


def _split_every(args: list[str]) -> tuple[str, str, dict[str, str]] | CommandReply:
    """CRON (five fields, or any number in quotes), the goal, --policy, --budget, --tier."""
    options: dict[str, str] = {}
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word in ("--policy", "--budget", "--tier"):
            value = next(words, None)
            if value is None:
                return CommandReply(f"`{word}` needs a value.")
            options[word[2:]] = value
        else:
            rest.append(word)
    if rest and rest[0].startswith('"'):
        end = next((i for i, w in enumerate(rest) if w.endswith('"') and (i or len(w) > 1)),
                   None)
        if end is None:
            return CommandReply("The cron's closing quote is missing.")
        expr, goal = " ".join(rest[:end + 1]).strip('"'), rest[end + 1:]
    else:
        expr, goal = " ".join(rest[:5]), rest[5:]
    if not goal:
        return CommandReply(f"Give a cron and a goal, e.g. `every 0 9 * * 1 write the weekly "
                            f"report --policy auto` ({cron.EXAMPLE}).")
    return expr, " ".join(goal), options


@command("every", "every CRON GOAL [--policy ask|auto|deny] [--budget USD] [--tier TIER] | "
                  "every list | every remove ID", "a goal started on a cron in this channel "
                                                  "(admins)")
async def every(inv: Invocation) -> CommandReply:
    sub = inv.args[0].lower() if inv.args else ""
    if sub == "list":
        return _every_list(inv)
    if sub == "remove":
        return _every_remove(inv)
    where = _channel(inv)
    if isinstance(where, CommandReply):
        return where
    parsed = _split_every(inv.args)
    if isinstance(parsed, CommandReply):
        return parsed
    expr, goal, options = parsed
    policy = options.get("policy", "ask").lower()
    if policy not in POLICIES:
        return CommandReply(f"The policy is one of {', '.join(POLICIES)}, not `{policy}`.")
    tier = options.get("tier", "").lower() or None
    if tier is not None and tier not in TIERS:
        return CommandReply(f"The tier is one of {', '.join(TIERS)}, not `{tier}`.")
    budget: float | None = None
    if "budget" in options:
        try:
            budget = float(options["budget"].lstrip("$"))
        except ValueError:
            budget = -1.0
        if not 0 < budget < 1e9:
            return CommandReply(f"The budget is a number of USD per run, e.g. `--budget 2.50`, "
                                f"not `{options['budget']}`.")
    try:
        cron.trigger(expr)
    except UserError as exc:
        return CommandReply(str(exc))
    with inv.swarm.db.tx() as s:
        row = RecurringGoal(platform=where.platform, team_id=where.team_id,
                            channel_id=where.channel_id, cron=expr, goal=redact(goal),
                            policy=policy, budget_usd=budget, tier=tier, created_by=inv.user)
        s.add(row)
        s.flush()
        rid = row.id
    _sync()
    return CommandReply(f"Recurring goal #{rid}: `{expr}` (UTC), policy {policy}"
                        + (f", budget ${budget:.2f} per run" if budget else "")
                        + (f", workers on the {tier} tier" if tier else "")
                        + f"{_next_run(RECURRING_JOB + str(rid))} — {redact(goal)}",
                        ephemeral=False)


def _every_list(inv: Invocation) -> CommandReply:
    with inv.swarm.db.read() as s:
        rows = list(s.scalars(select(RecurringGoal).where(RecurringGoal.team_id == inv.team_id)
                              .order_by(RecurringGoal.id)))
    if not rows:
        return CommandReply("No recurring goals yet: `every CRON GOAL` adds one.")
    lines = [f"#{r.id} `{r.cron}` · policy {r.policy} · " + (
        f"budget ${r.budget_usd:.2f} per run" if r.budget_usd else "no budget of its own")
        + (f" · workers on the {r.tier} tier" if r.tier else "")
        + f" · in {r.channel_id}{_next_run(RECURRING_JOB + str(r.id))} — {r.goal}"
        for r in rows]
    return CommandReply("Recurring goals:\n" + "\n".join(lines))


def _every_remove(inv: Invocation) -> CommandReply:
    if not _admin(inv):
        return CommandReply(admin_refusal("remove a recurring goal"))
    if len(inv.args) < 2 or not inv.args[1].lstrip("#").isdigit():
        return CommandReply("Give the recurring goal's number, e.g. `every remove 3` "
                            "(`every list` shows them).")
    rid = int(inv.args[1].lstrip("#"))
    with inv.swarm.db.tx() as s:
        row = s.get(RecurringGoal, rid) if rid < 2**63 else None
        if row is None or row.team_id != inv.team_id:
            return CommandReply(f"There is no recurring goal #{rid} here (`every list`).")
        s.delete(row)
    _sync()
    return CommandReply(f"Recurring goal #{rid} removed; objectives it started go on.",
                        ephemeral=False)


@command("ground", "ground ID", "check an objective against its goal and constraints now",
         forms=("ground ID",))
async def ground(inv: Invocation) -> CommandReply:
    view = objective_of(inv)
    if isinstance(view, CommandReply):
        return view
    with inv.swarm.db.read() as s:
        obj = s.get(Objective, view.id)
        allowed = obj is not None and inv.swarm.policy.may_decide(s, obj, inv.actor)
        root = obj.root_id or obj.parent_id if obj is not None else None
    if not allowed:
        return CommandReply("Only the requester, an approver or an admin can check this.")
    if root is not None:
        return CommandReply(f"Objective #{view.id} is a team of objective #{root}; its work is "
                            f"checked with #{root}'s (`ground {root}`).")
    outcome = await grounder_for(inv.swarm).check(view.id, "command")
    if outcome is None:
        return CommandReply(f"Objective #{view.id} has no new output to check since its last "
                            f"check.")
    if outcome.aligned:
        return CommandReply(f"Objective #{view.id} is on track (score {outcome.score:.2f}, "
                            f"{outcome.signal}).")
    held = " Its remaining steps are held; the drift notice is in its thread." \
        if outcome.held else ""
    return CommandReply(f"Objective #{view.id} drifted (score {outcome.score:.2f}, "
                        f"{outcome.signal}).{held}", ephemeral=False)
