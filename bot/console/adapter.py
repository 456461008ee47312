"""Console adapter: prints events as they happen and asks for approvals at the prompt."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from bot import picture, plain
from bot.console.render import plan_table, progress_line, recovery_line, troubleshoot_lines
from swarm.events import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalReminder,
    ApprovalRequested,
    CallRetried,
    Digest,
    DriftDetected,
    Event,
    Notice,
    ObjectiveAccepted,
    ObjectiveFinished,
    ObjectiveStateChanged,
    PlanProposed,
    QuestionAsked,
    StepFailed,
    StepFinished,
    StepRevised,
    StepStarted,
    StepTroubleshot,
    TeamStarted,
)
from swarm.services.objectives import Swarm
from swarm.store.models import ThreadRef

log = logging.getLogger(__name__)
AUTO_ANSWER = "No preference: proceed with your best judgement."


class ConsoleAdapter:
    platform = "console"
    coalesce_progress = False

    def __init__(self, swarm: Swarm, console: Console | None = None, *, auto_approve: bool = False,
                 user: str = "you", prompt: Callable[[str], str] | None = None,
                 pictures: Path | None = None) -> None:
        self.swarm, self.user, self.auto_approve = swarm, user, auto_approve
        self.pictures = pictures  # where the plan's pictures are written; None: not drawn
        self.console = console or Console()
        self._prompt = prompt or self.console.input
        self._prompt_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._asked: set[str] = set()  # approvals and questions prompted for in this process

    # -- prompts -----------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def prompts_done(self) -> bool:
        """Wait for open prompts; True if there were any."""
        had = bool(self._tasks)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return had

    async def _ask(self, question: str) -> str | None:
        async with self._prompt_lock:
            try:
                return await asyncio.to_thread(self._prompt, question)
            except EOFError:
                return None

    def _first_ask(self, key: str) -> bool:
        """True the first time: `resume` asks for what is open while the outbox it delivers may
        ask for the same, and one prompt is enough."""
        first = key not in self._asked
        self._asked.add(key)
        return first

    async def decide(self, approval_id: int, title: str) -> None:
        if not self._first_ask(f"approval:{approval_id}"):
            return
        if self.auto_approve:
            self.console.print(f"  [green]auto-approved[/] (--yes): {title}")
            await self.swarm.decide(approval_id, self.user, True, "approved with --yes")
            return
        answer = await self._ask(f"[bold]Approve[/] {title}? [y/n] ")
        if answer is None:
            self.console.print("  No answer at the prompt: the approval stays open; "
                               "`threadswarm resume` asks again.")
            return
        approve = answer.strip().lower() in ("y", "yes", "ok", "approve")
        reason = None
        if not approve and self.swarm.pending_plan(approval_id):  # with a reason: a new plan
            reason = await self._ask("  What should change? (the manager replans from it; "
                                     "empty: stop the objective) ")
        result = await self.swarm.decide(approval_id, self.user, approve, reason or None)
        self.console.print(f"  {result.message}")

    async def answer(self, thread: ThreadRef, question_id: int, question: str) -> None:
        if not self._first_ask(f"question:{question_id}"):
            return
        text = AUTO_ANSWER if self.auto_approve else await self._ask(f"[bold]?[/] {question} ")
        if not text:
            self.console.print("  No answer at the prompt: the step keeps waiting; "
                               "`threadswarm resume` asks again.")
            return
        await self.swarm.reply(thread, self.user, text)

    # -- events ------------------------------------------------------------------------------
    async def deliver(self, event: Event, thread: ThreadRef, key: str) -> None:
        # Every read comes before the first line: a read that fails leaves nothing shown, so
        # the dispatcher's retry prints no line (and asks nothing) twice. Prompts only for what
        # still waits: `resume` may deliver events of an objective that ended long ago.
        # a team's progress shows in its tree's: the root's bar, with the team's line in it
        view = self.swarm.view(self.swarm.root_of(event.objective_id)) if event.progress \
            else None
        waiting = self._waiting(event)
        drawn = picture.snapshot_for(event, self.swarm.view) if self.pictures else None
        out = self.console.print
        match event:
            case ObjectiveAccepted():
                out(f"[bold]Objective #{event.objective_id}[/]: {event.goal}  "
                    f"(planning…)")
            case PlanProposed():
                out(plan_table(event))
                if event.constraints:
                    out("  constraints: " + "; ".join(event.constraints))
                if waiting:
                    self._spawn(self.decide(event.approval_id, f"plan v{event.version} "
                                                               f"({len(event.steps)} steps)"))
            case ApprovalRequested():
                out(f"[yellow]approval needed[/]: {event.title}")
                if waiting:
                    self._spawn(self.decide(event.approval_id, event.title))
            case ApprovalDecided():
                verb = "approved" if event.approved else "rejected"
                out(f"  [bold]{verb}[/] by {event.user}: {event.title}")
            case StepStarted():
                again = f" (attempt {event.attempt})" if event.attempt > 1 else ""
                out(f"[cyan]▶ {event.role}[/] {event.title}{again}")
            case StepRevised():
                out(f"[magenta]↻ critic[/] sent back '{event.title}': {event.critique}")
            case StepFinished():
                first = next((ln for ln in event.output.splitlines() if ln.strip()), "")
                out(f"[green]✔ {event.role}[/] {event.title} — {first[:100]}")
            case StepFailed():
                out(f"[red]✖[/] {event.title}: {event.error}")
            case CallRetried():
                out(recovery_line(event))
                return  # a retry changes no step: no progress line
            case StepTroubleshot():
                out(troubleshoot_lines(event))
            case TeamStarted():
                out(f"[cyan]⑂ team #{event.team}[/] takes on '{event.title}' (its own plan; "
                    f"it reports one summary)")
            case QuestionAsked():
                out(f"[yellow]question[/] from '{event.title}': {event.question}")
                if waiting:
                    self._spawn(self.answer(thread, event.question_id, event.question))
            case ObjectiveStateChanged():
                out(f"Objective #{event.objective_id} is now {event.state} ({event.reason})")
            case ObjectiveFinished():
                self._results(event)
            case Notice():
                out(f"[yellow]note[/]: {event.text}")
            case ApprovalReminder():
                out(f"[yellow]⏰ {escape(plain.reminder(event))}[/]")
            case ApprovalExpired():
                out(f"[red]⌛ {escape(plain.expired(event))}[/]")
            case DriftDetected():
                out(f"[bold red]⚠ drift[/] {escape(plain.drift(event))}")
                if waiting:
                    self._spawn(self.decide(event.approval_id, "the correction (n: continue "
                                                               "as planned)"))
            case Digest():
                out(f"[bold]📋 digest[/] {escape(plain.digest(event))}")
        if view is not None:
            out(progress_line(view))
        if drawn is not None:
            await self._picture(drawn, key)

    async def _picture(self, snapshot: picture.PlanSnapshot, key: str) -> None:
        """Write the plan's picture next to the database and say where: best effort, since a
        raise here would have the dispatcher print the event's lines again."""
        assert self.pictures is not None
        if (drawing := await picture.render(snapshot)) is None:
            return
        path = self.pictures / drawing.filename.replace(".png", f"-{key.rsplit(':', 1)[-1]}.png")
        try:
            await asyncio.to_thread(_write, path, drawing.png)
        except OSError as exc:
            log.warning("console.picture_not_written path=%s error=%s", path, exc)
            return
        self.console.print(f"  [dim]picture of the plan:[/] {path}")

    def _waiting(self, event: Event) -> bool:
        """Whether the event's approval or question still waits for a human."""
        match event:
            case PlanProposed() | ApprovalRequested() | DriftDetected():
                return any(a.id == event.approval_id
                           for a in self.swarm.pending_approvals(event.objective_id))
            case QuestionAsked():
                return any(q.id == event.question_id
                           for q in self.swarm.open_questions(event.objective_id))
        return False

    def _results(self, event: ObjectiveFinished) -> None:
        for result in event.results:
            style = "green" if result.state == "finished" else "red"
            self.console.print(Panel(result.output or "(no output)", border_style=style,
                                     title=f"{result.title} · {result.role} · {result.state}",
                                     title_align="left"))
        colour = "green" if event.state == "finished" else "red"
        self.console.print(f"[bold {colour}]Objective #{event.objective_id} {event.state}[/]: "
                           f"{event.summary}")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
