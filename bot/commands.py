"""Admin commands (`/swarm ...`), platform-neutral: Slack, Discord and the console all route
their command text here. One grammar (bot/grammar.py), parsed once; the swarm's services
decide who may do what (swarm/services/policy.py)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.grammar import Match, match, tokens
from swarm.contract import Principal
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
    who: Principal | None = None
    match: Match = field(default_factory=Match)

    @property
    def actor(self) -> Principal:
        """Who asked, with what their platform says of them."""
        return self.who or Principal(self.user, self.team_id)


Handler = Callable[[Invocation], Awaitable[CommandReply]]


class UsageError(ValueError):
    """Raised by a handler that parses its own arguments: the answer is its help."""


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    run: Handler
    forms: tuple[str, ...] | None = None  # None: the handler parses `args` itself
    admin: bool = False  # shown in help; the services check it
    stand_in: bool = False  # answers until the module that owns the name registers it

    def help(self) -> str:
        lines = [f"`{self.usage}` — {self.summary}" + (" (changes: admins)" if self.admin
                                                        else "")]
        if self.forms and len(self.forms) > 1:
            lines += [f"  `{f}`" for f in self.forms]
        return "\n".join(lines)


COMMANDS: dict[str, Command] = {}
PICTURE_FLAG = "--picture"


def command(name: str, usage: str, summary: str, *, forms: tuple[str, ...] | None = None,
            admin: bool = False, stand_in: bool = False) -> Callable[[Handler], Handler]:
    """Declare a subcommand: adding one is one decorated function. `forms` are its usage lines
    (bot/grammar.py); the parser picks the one that fits, or answers with its help. A stand-in
    never replaces a real registration, whichever module is imported first."""
    def register(fn: Handler) -> Handler:
        if not (stand_in and name in COMMANDS and not COMMANDS[name].stand_in):
            COMMANDS[name] = Command(name, usage, summary, fn, forms, admin, stand_in)
        return fn
    return register


@dataclass(frozen=True)
class Parsed:
    command: Command
    args: list[str]
    match: Match


def parse(text: str) -> Parsed | CommandReply:
    """A command and the form it fits, or the help answer (never an exception)."""
    words = tokens(text)
    if not words:
        return help_text()
    found = COMMANDS.get(words[0].word.lower())
    if found is None:
        return CommandReply(f"I don't know `{words[0].word[:40]}`.\n{help_text().text}")
    args = [w.word for w in words[1:]]
    if found.forms is None:
        return Parsed(found, args, Match())
    for form in found.forms:
        if (got := match(form, words[1:], text)) is not None:
            return Parsed(found, args, got)
    return usage_of(found)


def usage_of(cmd: Command) -> CommandReply:
    return CommandReply(f"That is not how `{cmd.name}` goes:\n{cmd.help()}")


async def handle(swarm: Swarm, actor: Principal | str, team_id: str, text: str, *,
                 platform: str = "console", platform_admin: bool = False,
                 channel_id: str | None = None) -> CommandReply:
    """Run `text` (what follows the command's name) for `actor` in `team_id`. An adapter
    passes a Principal with what its platform says of the user, or a bare user id with those
    facts as keywords (`platform_admin`: Slack's workspace admin, Discord's Manage Server)."""
    who = actor if isinstance(actor, Principal) else \
        Principal(actor, team_id, platform, platform_admin, channel_id)
    parsed = parse(text)
    if isinstance(parsed, CommandReply):
        reply = parsed
    else:
        try:
            reply = await parsed.command.run(Invocation(swarm, who.user, who.team_id,
                                                        parsed.args, who, parsed.match))
        except UsageError:
            reply = usage_of(parsed.command)
    # a reply may echo what was typed: it is redacted like every other message
    return CommandReply(redact(reply.text), reply.ephemeral)


def help_text() -> CommandReply:
    lines = [f"`{c.usage}` — {c.summary}" + (" (changes: admins)" if c.admin else "")
             for c in COMMANDS.values()]
    return CommandReply("Commands:\n" + "\n".join(lines))


def objective_of(inv: Invocation) -> ObjectiveView | CommandReply:
    """The objective the form's ID names, if it is one of this team's."""
    oid = inv.match.id
    if oid is None:
        return CommandReply("Give an objective's number, e.g. `status 12` (`list` shows them).")
    view = inv.swarm.view(oid)
    if view is None or view.thread.team_id != inv.team_id:
        return CommandReply(f"There is no objective #{oid} here (`list` shows this team's).")
    return view


def _line(view: ObjectiveView) -> str:
    done = sum(st.state == "finished" for st in view.steps)
    return (f"#{view.id} {view.state} · {done}/{len(view.steps)} steps · {view.tokens} tokens · "
            f"{view.spend.show_cost()} — {view.goal}")


@command("help", "help [COMMAND]", "this list, or how one command goes",
         forms=("help", "help TEXT"))
async def help_(inv: Invocation) -> CommandReply:
    if inv.match.text and (cmd := COMMANDS.get(inv.match.text.split()[0].lower())):
        return CommandReply(cmd.help())
    return help_text()


@command("status", "status [ID]",
         f"one objective's steps (add `{PICTURE_FLAG}` for a drawing in its thread), or the "
         f"active ones",
         forms=("status", "status ID", f"status ID {PICTURE_FLAG}", f"status {PICTURE_FLAG} ID",
                f"status {PICTURE_FLAG}"))
async def status(inv: Invocation) -> CommandReply:
    drawn = PICTURE_FLAG in inv.match.flags
    if drawn and inv.match.id is None:
        return CommandReply(f"Give an objective's number, e.g. `status 12 {PICTURE_FLAG}`.")
    if inv.match.id is None:
        views = inv.swarm.objectives(team_id=inv.team_id, active_only=True)
        if not views:
            return CommandReply("Nothing is running. Mention me with a goal to start.")
        return CommandReply("Active objectives:\n" + "\n".join(_line(v) for v in views))
    view = objective_of(inv)
    if isinstance(view, CommandReply):
        return view
    lines = [_line(view), *_step_lines(view, "  ")]
    if view.summary:
        lines.append(view.summary)
    if drawn:
        lines.append((await inv.swarm.request_picture(view.id, inv.user)).message
                     if view.steps else "It has no plan to draw yet.")
    return CommandReply("\n".join(lines))


def _step_lines(view: ObjectiveView, indent: str) -> list[str]:
    """The steps, each team expanded under its step (the whole tree)."""
    lines = []
    for st in view.steps:
        took = f" · {st.elapsed_s:.1f}s" if st.elapsed_s is not None else ""
        lines.append(f"{indent}{st.key} {st.state} · {st.role} · {st.title}{took}")
        if (team := view.teams.get(st.id)) is not None:
            lines.append(f"{indent}  team {_line(team)}")
            lines += _step_lines(team, indent + "    ")
    return lines


@command("list", "list [--all]", "this channel's latest objectives (--all: the team's)",
         forms=("list", "list --all"))
async def list_(inv: Invocation) -> CommandReply:
    everything = "--all" in inv.match.flags
    views = inv.swarm.objectives(team_id=inv.team_id, limit=50 if everything else 10)
    channel = inv.actor.channel_id
    if not everything and channel is not None:
        views = [v for v in views if v.thread.channel_id == channel]
    if not views:
        return CommandReply("No objectives yet. Mention me with a goal to start one.")
    return CommandReply("Latest objectives:\n" + "\n".join(_line(v) for v in views))


async def _steer(inv: Invocation, act: str) -> CommandReply:
    view = objective_of(inv)
    if isinstance(view, CommandReply):
        return view
    method = {"cancel": inv.swarm.cancel, "pause": inv.swarm.pause,
              "resume": inv.swarm.resume}[act]
    result = await method(view.id, inv.actor)
    return CommandReply(result.message, ephemeral=not result.ok)


@command("cancel", "cancel ID", "stop an objective (its requester or an admin)",
         forms=("cancel ID",))
async def cancel(inv: Invocation) -> CommandReply:
    return await _steer(inv, "cancel")


@command("pause", "pause ID", "pause an objective (its requester or an admin)",
         forms=("pause ID",))
async def pause(inv: Invocation) -> CommandReply:
    return await _steer(inv, "pause")


@command("resume", "resume ID", "resume a paused objective (its requester or an admin)",
         forms=("resume ID",))
async def resume(inv: Invocation) -> CommandReply:
    return await _steer(inv, "resume")


# (register the rest of the grammar, and the schedules' digest, every, ground)
from bot import admin_commands, schedule_commands  # noqa: E402,F401
