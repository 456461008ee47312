"""The `threadswarm` command line: run, status, resume, audit, memory, serve."""
from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable

from rich.console import Console

from bot import serve
from bot.console.adapter import ConsoleAdapter
from bot.console.render import status_table
from bot.runtime import Runtime, configure_logging
from swarm.audit import verify_chain
from swarm.config import Settings
from swarm.models import ThreadRef
from swarm.states import ObjectiveState

console = Console()


def _banner(rt: Runtime) -> None:
    if rt.swarm.llm.offline:
        console.print("[yellow]Using the offline rehearsal model (no API key, no network): "
                      "plans and outputs are derived from the goal text. Set "
                      "THREADSWARM_MODEL (e.g. gpt-4o-mini) for a real model.[/]")


def _console_runtime(args: argparse.Namespace, settings: Settings
                     ) -> tuple[Runtime, ConsoleAdapter]:
    rt = Runtime(settings, memory=False if args.no_memory else None)
    adapter = ConsoleAdapter(rt.swarm, console, auto_approve=args.yes, user=args.user)
    rt.add_adapter(adapter)
    _banner(rt)
    rt.start()
    return rt, adapter


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
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
        if not ids:
            console.print("Nothing to resume: every objective has ended.")
            return 0
        console.print(f"Resuming objective(s) {', '.join(f'#{i}' for i in ids)}")
        for oid in ids:  # ask again what the humans had not answered before the stop
            for approval in rt.swarm.pending_approvals(oid):
                await adapter.decide(approval.id, approval.title)
            view = rt.swarm.view(oid)
            for q in rt.swarm.open_questions(oid):
                if view is not None:
                    await adapter.answer(view.thread, q.text)
        await rt.settle(adapter)
        return _report(rt, ids)
    finally:
        await rt.close()


def _report(rt: Runtime, ids: list[int]) -> int:
    code = 0
    for oid in ids:
        view = rt.swarm.view(oid)
        if view is None:
            continue
        console.print(status_table(view))
        if view.state in (ObjectiveState.FAILED, ObjectiveState.CANCELLED):
            code = 1
        elif view.state != ObjectiveState.FINISHED:
            console.print(f"Objective #{oid} is {view.state} and waits for a human; "
                          f"`threadswarm resume` continues it.")
    return code


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    rt = Runtime(settings, memory=False)
    try:
        if args.id is not None:
            view = rt.swarm.view(args.id)
            if view is None:
                console.print(f"There is no objective #{args.id}.")
                return 1
            console.print(status_table(view))
            if view.summary:
                console.print(view.summary)
            return 0
        views = rt.swarm.objectives(limit=args.limit)
        if not views:
            console.print("No objectives yet: `threadswarm run \"GOAL\"` starts one.")
        for v in views:
            done = sum(st.state == "finished" for st in v.steps)
            console.print(f"#{v.id} ({v.state}) {done}/{len(v.steps)} steps · {v.tokens} tokens"
                          f" · ${v.cost:.4f} — {v.goal}")
        return 0
    finally:
        await rt.close()


async def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    rt = Runtime(settings, memory=False)
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
    console_flags(run)
    run.set_defaults(func=cmd_run)

    resume = sub.add_parser("resume", help="resume every objective that has not ended")
    console_flags(resume)
    resume.set_defaults(func=cmd_resume)

    status = sub.add_parser("status", help="list objectives, or show one")
    status.add_argument("id", nargs="?", type=int)
    status.add_argument("--limit", type=int, default=20)
    status.set_defaults(func=cmd_status)

    audit = sub.add_parser("audit", help="the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser("verify", help="check the hash chain").set_defaults(func=cmd_audit)
    serve.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    func: Callable[[argparse.Namespace, Settings], Awaitable[int]] = args.func
    try:
        sys.exit(asyncio.run(func(args, Settings())))
    except KeyboardInterrupt:
        console.print("\nStopped. Nothing is lost: `threadswarm resume` continues.")
        sys.exit(130)


if __name__ == "__main__":
    main()
