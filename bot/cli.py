"""The `threadswarm` command line: run, status, resume, audit, memory, serve, migrate, worker."""
from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from rich.console import Console

from bot import commands, memory_commands, serve, worker
from bot.console.adapter import ConsoleAdapter
from bot.console.render import spend_table, spend_text, status_table
from bot.runtime import Runtime, configure_logging
from swarm.config import Settings, SettingsError
from swarm.contract import Principal
from swarm.llm.budget import Ceiling, objective_key, team_key
from swarm.llm.faults import DEMO_FAULTS, FaultPlan, FaultSpecError
from swarm.states import ObjectiveState
from swarm.store import migrate
from swarm.store.audit import verify_chain
from swarm.store.db import Database
from swarm.store.models import ThreadRef, utcnow
from swarm.store.spend import daily_spend, month_key, month_start, team_spend

console = Console()


def _banner(rt: Runtime) -> None:
    if rt.swarm.llm.offline:
        console.print("[yellow]Using the offline rehearsal model (no API key, no network): "
                      "plans and outputs are derived from the goal text. Set "
                      "THREADSWARM_MODEL (e.g. gpt-4o-mini) for a real model.[/]")


def _runtime(settings: Settings, memory: bool | None) -> Runtime:
    """The console's runtime: on SQLite (the embedded default, `make demo`) it migrates by
    itself; a shared PostgreSQL is migrated on purpose, by `threadswarm migrate`."""
    return Runtime(settings, memory=memory, migrate=settings.url.startswith("sqlite"))


def _console_runtime(args: argparse.Namespace, settings: Settings
                     ) -> tuple[Runtime, ConsoleAdapter]:
    rt = _runtime(settings, False if args.no_memory else None)
    adapter = ConsoleAdapter(rt.swarm, console, auto_approve=args.yes, user=args.user,
                             pictures=settings.data_dir / "pictures")
    rt.add_adapter(adapter)
    _banner(rt)
    rt.start()
    return rt, adapter


def _inject_faults(spec: str, settings: Settings) -> bool:
    """--inject-faults: make the offline model fail now and then, to watch the recovery."""
    try:
        plan = FaultPlan.parse(spec)
    except FaultSpecError as exc:
        console.print(f"[red]--inject-faults: {exc}.[/]")
        return False
    settings.offline_faults = spec
    if not any(settings.model_for(t).startswith("offline/") for t in ("planner", "worker",
                                                                       "fast")):
        console.print("[yellow]--inject-faults only affects the offline model, and no tier "
                      "uses it.[/]")
    console.print(f"[yellow]Injecting faults into the offline model ({plan.describe()}, seed "
                  f"{settings.offline_fault_seed}): watch the retries, fallbacks and the "
                  f"troubleshooter.[/]")
    return True


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if args.inject_faults and not _inject_faults(settings.offline_faults or DEMO_FAULTS,
                                                 settings):
        return 2
    rt, adapter = _console_runtime(args, settings)
    try:
        key = uuid.uuid4().hex
        thread = ThreadRef("console", args.team, "console", key)
        started = await rt.swarm.start_objective(args.goal, thread, args.user, f"console:{key}")
        await rt.settle(adapter)
        return _report(rt, [started.objective_id])
    finally:
        await rt.close()


async def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    rt, adapter = _console_runtime(args, settings)
    try:
        ids = await rt.swarm.recover()
        if ids:
            console.print(f"Resuming objective(s) {', '.join(f'#{i}' for i in ids)}")
        for oid in ids:  # ask again what the humans had not answered before the stop
            for approval in rt.swarm.pending_approvals(oid):
                await adapter.decide(approval.id, approval.title)
            view = rt.swarm.view(oid)
            for q in rt.swarm.open_questions(oid):
                if view is not None:
                    await adapter.answer(view.thread, q.id, q.text)
        # Even with nothing to resume: a stop just after an objective ended leaves its last
        # events (the results) in the outbox, and this is where they are shown.
        await rt.settle(adapter)
        if not ids:
            console.print("Nothing to resume: every objective has ended.")
        return _report(rt, ids)
    finally:
        await rt.close()


def _report(rt: Runtime, ids: list[int]) -> int:
    code = 0
    for oid in ids:
        view = rt.swarm.view(oid)
        if view is None:
            continue
        console.print(status_table(view, _ceiling(rt, oid)))
        if view.state in (ObjectiveState.FAILED, ObjectiveState.CANCELLED):
            code = 1
        elif view.state != ObjectiveState.FINISHED:
            console.print(f"Objective #{oid} is {view.state} and waits for a human; "
                          f"`threadswarm resume` continues it.")
    return code


def _ceiling(rt: Runtime, objective_id: int) -> Ceiling:
    budget = rt.swarm.budget
    with rt.db.read() as s:
        return budget.ceiling(s, objective_key(objective_id), budget.objective_default)


def _spend_report(rt: Runtime, days: int) -> None:
    now, budget = utcnow(), rt.swarm.budget
    with rt.db.read() as s:
        per_day = daily_spend(s, now - timedelta(days=days))
        months = {team: (team_spend(s, team, month_start(now)),
                         budget.ceiling(s, team_key(team, month_key(now)), budget.team_default))
                  for team in sorted({d.team_id for d in per_day})}
    if not per_day:
        console.print(f"No model calls in the last {days} days.")
        return
    console.print(spend_table(per_day, months))


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    rt = _runtime(settings, False)
    try:
        if args.id is not None:
            view = rt.swarm.view(args.id)
            if view is None:
                console.print(f"There is no objective #{args.id}.")
                return 1
            console.print(status_table(view, _ceiling(rt, args.id)))
            if view.summary:
                console.print(view.summary)
            return 0
        if args.spend:
            for v in rt.swarm.objectives(limit=args.limit):
                console.print(f"#{v.id} ({v.state}) {spend_text(v.spend)} — {v.goal}")
            _spend_report(rt, args.days)
            return 0
        views = rt.swarm.objectives(limit=args.limit)
        if not views:
            console.print("No objectives yet: `threadswarm run \"GOAL\"` starts one.")
        for v in views:
            done = sum(st.state == "finished" for st in v.steps)
            console.print(f"#{v.id} ({v.state}) {done}/{len(v.steps)} steps · {v.tokens} tokens"
                          f" · {v.spend.show_cost()} — {v.goal}")
        return 0
    finally:
        await rt.close()


async def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    rt = _runtime(settings, False)
    try:
        with rt.db.read() as s:
            report = verify_chain(s)
        if report.ok:
            console.print(f"Audit chain intact: {report.entries} entries.")
            return 0
        where = f" at entry #{report.first_bad_id}" if report.first_bad_id else ""
        console.print(f"[red]Audit chain broken{where}: {report.problem}.[/]")
        return 1
    finally:
        await rt.close()


async def cmd_admin(args: argparse.Namespace, settings: Settings) -> int:
    """`threadswarm admin WORDS...`: the chat's `/swarm` grammar, at the console."""
    text = " ".join(args.words)
    rt = _runtime(settings, None if text.split()[:1] == ["memory"] else False)
    try:
        who = Principal(args.user, args.team, "console", args.operator, args.channel)
        reply = await commands.handle(rt.swarm, who, args.team, text)
        console.print(reply.text, markup=False, highlight=False, soft_wrap=True)
        return 0 if not reply.text.startswith(("Only ", "That is not", "I don't know")) else 1
    finally:
        await rt.close()


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """`threadswarm migrate`: the database to this code's schema (what `serve` and `worker`
    require); running it again changes nothing."""
    db = Database.connect(settings.url)
    try:
        done = migrate.upgrade(db)
    finally:
        db.close()
    where = db.engine.url.render_as_string(hide_password=True)
    start = done.before or done.adopted
    lines = [] if not done.adopted else [
        f"{where} was made before migrations; its tables are those of revision {done.adopted}, "
        f"so it is stamped there."]
    if start is None:
        lines.append(f"{where}: tables created, at schema revision {done.after}.")
    elif start == done.after:
        lines.append(f"{where} is at schema revision {done.after}.")
    else:
        lines.append(f"{where} upgraded from schema revision {start} to {done.after}.")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="threadswarm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    def console_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--yes", action="store_true", help="approve everything, answer questions "
                                                         "with 'use your judgement'")
        p.add_argument("--user", default="you", help="who you are in the audit log")
        p.add_argument("--no-memory", action="store_true", help="run without team memory")

    run = sub.add_parser("run", help="run one objective in the console")
    run.add_argument("goal")
    run.add_argument("--team", default="local")
    run.add_argument("--inject-faults", action="store_true",
                     help="make the offline model fail now and then (rate limits, server "
                          "errors, timeouts, invalid JSON, latency) to watch the recovery: "
                          f"THREADSWARM_OFFLINE_FAULTS if set, else {DEMO_FAULTS!r}; the RNG "
                          "seed is THREADSWARM_OFFLINE_FAULT_SEED")
    console_flags(run)
    run.set_defaults(func=cmd_run)

    resume = sub.add_parser("resume", help="resume every objective that has not ended")
    console_flags(resume)
    resume.set_defaults(func=cmd_resume)

    status = sub.add_parser("status", help="list objectives, or show one")
    status.add_argument("id", nargs="?", type=int)
    status.add_argument("--limit", type=int, default=20)
    status.add_argument("--spend", action="store_true",
                        help="tokens and cost per objective, per team and day, and each team's "
                             "month against its monthly budget")
    status.add_argument("--days", type=int, default=30, help="days shown by --spend")
    status.set_defaults(func=cmd_status)

    audit = sub.add_parser("audit", help="the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="check the hash chain").set_defaults(func=cmd_audit)
    admin = sub.add_parser("admin", help="the chat's /swarm commands (`admin help`)")
    admin.add_argument("words", nargs=argparse.REMAINDER,
                       help="after the options, e.g. status 3, budget set team $50")
    admin.add_argument("--user", default="you", help="who you are in the audit log")
    admin.add_argument("--team", default="local")
    admin.add_argument("--channel", default=None)
    admin.add_argument("--operator", action="store_true",
                       help="you run the server: act as an admin of the team")
    admin.set_defaults(func=cmd_admin)
    serve.register(sub)
    sub.add_parser("migrate", help="create or upgrade the database's tables (before `serve` "
                                   "and `worker`, after an upgrade of threadswarm)"
                   ).set_defaults(func=cmd_migrate)
    worker.register(sub)
    sync = sub.add_parser("discord-sync", help="register the /swarm app command with Discord "
                                               "(globally, or in one guild)")
    sync.add_argument("--guild", type=int, help="a guild's id: registered there at once")
    sync.set_defaults(func=cmd_discord_sync)
    memory_commands.register(sub)
    return parser


async def cmd_discord_sync(args: argparse.Namespace, settings: Settings) -> int:
    from bot.discord.sync import cmd_discord_sync as sync  # discord.py loads only for this

    return await sync(args)


async def _with_memory(args: argparse.Namespace, settings: Settings) -> int:
    """`threadswarm memory ...`: the command gets the team memory on the same database."""
    rt = _runtime(settings, True)
    try:
        return int(await args.func(args, rt.memory))
    finally:
        await rt.close()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    func: Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int] | int] = args.func
    if getattr(args, "needs_memory", False):
        func = _with_memory
    try:
        done = func(args, Settings())  # `worker` blocks in Celery's own loop; the rest are async
        sys.exit(done if isinstance(done, int) else asyncio.run(done))
    except (SettingsError, migrate.SchemaNotCurrent) as exc:  # say what to set, or to run
        console.print(str(exc), style="red", markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("\nStopped. Nothing is lost: `threadswarm resume` continues.")
        sys.exit(130)


if __name__ == "__main__":
    main()
