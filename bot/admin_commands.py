"""The rest of the `/swarm` grammar: budget, approvers, admins, memory, roles, audit, and the
scheduling commands' stand-ins (the schedules module registers the real ones)."""
from __future__ import annotations

from bot.commands import CommandReply, Invocation, command, objective_of
from swarm.contract import Decision

NOT_SCHEDULED = "Scheduling is not enabled here yet: `{name}` needs the schedules module."


def _reply(result: Decision) -> CommandReply:
    return CommandReply(result.message, ephemeral=not result.ok)


@command("budget", "budget [show | set objective|team AMOUNT]",
         "the team's ceilings; set one (e.g. `budget set team $50`, `20k tokens`, `off`)",
         forms=("budget", "budget show", "budget set objective|team AMOUNT"), admin=True)
async def budget(inv: Invocation) -> CommandReply:
    team = inv.swarm.team
    if inv.match.words[:1] == ("set",):
        scope, amount = inv.match.words[1], inv.match.amount
        assert amount is not None
        if amount.unit == "off":
            return _reply(team.set_budget(inv.actor, scope, usd=None, tokens=None))
        if amount.unit == "usd":
            return _reply(team.set_budget(inv.actor, scope, usd=amount.value))
        return _reply(team.set_budget(inv.actor, scope, tokens=int(amount.value or 0)))
    view = team.budgets(inv.actor)
    return CommandReply(f"Each objective: {view.objective.show()}\n"
                        f"The team, per month: {view.team.show()} "
                        f"({view.month}: {view.month_spend.show_cost()}, "
                        f"{view.month_spend.tokens:,} tokens spent)")


def _members(role: str) -> object:
    async def run(inv: Invocation) -> CommandReply:
        team = inv.swarm.team
        if inv.match.words[:1] == ("add",):
            return _reply(team.add_member(inv.actor, role, inv.match.user or ""))
        if inv.match.words[:1] == ("remove",):
            return _reply(team.remove_member(inv.actor, role, inv.match.user or ""))
        people = team.members(inv.actor, role)
        if not people:
            who = ("the platform's admins (workspace admins and owners, Manage Server)"
                   if role == "admin" else "each objective's requester and the admins")
            return CommandReply(f"No {role}s named yet: {who} decide.")
        return CommandReply(f"{role.capitalize()}s: " + ", ".join(people))
    return run


command("approvers", "approvers [list | add @user | remove @user]",
        "who may decide approvals",
        forms=("approvers", "approvers list", "approvers add|remove @USER"),
        admin=True)(_members("approver"))  # type: ignore[arg-type]
command("admins", "admins [list | add @user | remove @user]",
        "who may administer the swarm here",
        forms=("admins", "admins list", "admins add|remove @USER"),
        admin=True)(_members("admin"))  # type: ignore[arg-type]


@command("memory", "memory [search TEXT | remember TEXT | forget ID | list]",
         "the team's memory (forgetting is for admins)",
         forms=("memory", "memory list", "memory search TEXT", "memory remember TEXT",
                "memory forget ID"))
async def memory(inv: Invocation) -> CommandReply:
    team, sub, store = inv.swarm.team, inv.match.words[:1], inv.swarm.memory
    if sub == ("remember",):
        return _reply(await team.remember(inv.actor, inv.match.text or ""))
    if sub == ("forget",):
        return _reply(await team.forget(inv.actor, inv.match.id or 0))
    if store is None:
        return CommandReply("Team memory is not enabled here.")
    if sub == ("search",):
        found = await store.recall(inv.team_id, inv.match.text or "", 5)
        if not found:
            return CommandReply("Nothing in team memory matches.")
        return CommandReply("\n".join(f"#{m.id} ({m.kind}) {_short(m.text)}" for m in found))
    items = store.list(inv.team_id, limit=10)
    if not items:
        return CommandReply("Team memory is empty.")
    return CommandReply("Newest memories:\n" + "\n".join(f"#{m.id} ({m.kind}) {_short(m.text)}"
                                                         for m in items))


def _short(text: str, width: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@command("roles", "roles", "the worker roles, their tools and which need approval",
         forms=("roles",))
async def roles(inv: Invocation) -> CommandReply:
    lines = [f"`{r.name}` ({r.tier}{', needs approval' if r.risky else ''}) — "
             f"{r.description} Tools: {', '.join(r.tools) or 'none'}."
             for r in inv.swarm.roles.values() if r.plannable]
    return CommandReply("Roles:\n" + "\n".join(lines))


@command("audit", "audit ID | audit verify",
         "an objective's decisions on the record, or check the whole log's hash chain",
         forms=("audit ID", "audit verify"))
async def audit(inv: Invocation) -> CommandReply:
    if inv.match.words == ("verify",):
        report = inv.swarm.team.verify()
        if report.ok:
            return CommandReply(f"Audit log intact: {report.entries} entries chained.")
        where = f" at entry #{report.first_bad_id}" if report.first_bad_id else ""
        return CommandReply(f"Audit log broken{where}: {report.problem}.", ephemeral=False)
    view = objective_of(inv)
    if isinstance(view, CommandReply):
        return view
    trail = inv.swarm.team.trail(inv.actor, view.id) or []
    lines = [f"#{e.id} {e.at[:19].replace('T', ' ')} {e.actor} {e.action}" + _detail(e.detail)
             for e in trail]
    return CommandReply(f"Audit trail of objective #{view.id}:\n" + "\n".join(lines),
                        ephemeral=False)


def _detail(detail: dict[str, object]) -> str:
    shown = {k: v for k, v in detail.items() if k not in ("goal",) and v not in (None, "")}
    return (" · " + ", ".join(f"{k}={_short(str(v), 60)}" for k, v in shown.items())) \
        if shown else ""


def _stand_in(name: str, usage: str, summary: str) -> None:
    async def run(inv: Invocation) -> CommandReply:
        return CommandReply(NOT_SCHEDULED.format(name=name))
    command(name, usage, summary, stand_in=True)(run)


_stand_in("digest", "digest [CRON | off]", "a status digest in this channel on a schedule")
_stand_in("every", "every CRON GOAL [--policy ...] | every list | every remove ID",
          "a recurring objective")
_stand_in("ground", "ground ID", "check a running objective against its goal now")
