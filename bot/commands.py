"""Admin commands (`/swarm ...`), platform-neutral: every chat adapter routes its command here."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from swarm.redact import redact
from swarm.services.objectives import Swarm
from swarm.store.views import ObjectiveView


@dataclass(frozen=True)
class CommandReply:
    text: str
    ephemeral: bool = True  # only the person who asked sees it


@dataclass(frozen=True)
class Invocation:
    swarm: Swarm
    user: str
    team_id: str
    args: list[str]


Handler = Callable[[Invocation], Awaitable[CommandReply]]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    run: Handler


COMMANDS: dict[str, Command] = {}
PICTURE_FLAG = "--picture"


def command(name: str, usage: str, summary: str) -> Callable[[Handler], Handler]:
    """Declare a subcommand: adding one is one decorated function."""
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(name, usage, summary, fn)
        return fn
    return register


async def handle(swarm: Swarm, user: str, team_id: str, text: str) -> CommandReply:
    """Run `text` (what follows the command's name) for `user` in `team_id`."""
    words = text.split()
    if not words:
        return _help_text()
    found = COMMANDS.get(words[0].lower())
    if found is None:
        reply = CommandReply(f"I don't know `{words[0]}`.\n{_help_text().text}")
    else:
        reply = await found.run(Invocation(swarm, user, team_id, words[1:]))
    # a reply may echo what was typed: it is redacted like every other message
    return CommandReply(redact(reply.text), reply.ephemeral)


def _help_text() -> CommandReply:
    lines = [f"`{c.usage}` — {c.summary}" for c in COMMANDS.values()]
    return CommandReply("Commands:\n" + "\n".join(lines))


def _objective(inv: Invocation) -> ObjectiveView | CommandReply:
    """The objective named by the first argument, if it is one of this team's."""
    if not inv.args or not inv.args[0].lstrip("#").isdigit():
        return CommandReply("Give an objective's number, e.g. `status 12` (`list` shows them).")
    oid = int(inv.args[0].lstrip("#"))
    view = inv.swarm.view(oid)
    if view is None or view.thread.team_id != inv.team_id:
        return CommandReply(f"There is no objective #{oid} here (`list` shows this team's).")
    return view


def _line(view: ObjectiveView) -> str:
    done = sum(st.state == "finished" for st in view.steps)
    return (f"#{view.id} {view.state} · {done}/{len(view.steps)} steps · {view.tokens} tokens · "
            f"{view.spend.show_cost()} — {view.goal}")


@command("help", "help", "this list")
async def help_(inv: Invocation) -> CommandReply:
    return _help_text()


@command("status", "status [ID]",
         f"one objective's steps (add `{PICTURE_FLAG}` for a drawing in its thread), or the "
         f"active ones")
async def status(inv: Invocation) -> CommandReply:
    drawn = PICTURE_FLAG in inv.args
    inv = replace(inv, args=[a for a in inv.args if a != PICTURE_FLAG])
    if drawn and not inv.args:
        return CommandReply(f"Give an objective's number, e.g. `status 12 {PICTURE_FLAG}`.")
    if not inv.args:
        views = inv.swarm.objectives(team_id=inv.team_id, active_only=True)
        if not views:
            return CommandReply("Nothing is running. Mention me with a goal to start.")
        return CommandReply("Active objectives:\n" + "\n".join(_line(v) for v in views))
    view = _objective(inv)
    if isinstance(view, CommandReply):
        return view
    lines = [_line(view)]
    for st in view.steps:
        took = f" · {st.elapsed_s:.1f}s" if st.elapsed_s is not None else ""
        lines.append(f"  {st.key} {st.state} · {st.role} · {st.title}{took}")
    if view.summary:
        lines.append(view.summary)
    if drawn:
        lines.append((await inv.swarm.request_picture(view.id, inv.user)).message
                     if view.steps else "It has no plan to draw yet.")
    return CommandReply("\n".join(lines))


@command("list", "list", "this team's latest objectives")
async def list_(inv: Invocation) -> CommandReply:
    views = inv.swarm.objectives(team_id=inv.team_id, limit=10)
    if not views:
        return CommandReply("No objectives yet. Mention me with a goal to start one.")
    return CommandReply("Latest objectives:\n" + "\n".join(_line(v) for v in views))


@command("cancel", "cancel ID", "stop an objective (its requester or an approver)")
async def cancel(inv: Invocation) -> CommandReply:
    view = _objective(inv)
    if isinstance(view, CommandReply):
        return view
    result = await inv.swarm.cancel(view.id, inv.user)
    return CommandReply(result.message, ephemeral=not result.ok)
