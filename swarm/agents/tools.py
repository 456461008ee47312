"""Worker tools: typed async functions whose signature and docstring are their schema."""
from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, get_type_hints

log = logging.getLogger(__name__)
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


class NeedsHumans(Exception):
    """Raised by ask_humans: the step waits (durably) for an answer in the thread."""

    def __init__(self, question: str) -> None:
        super().__init__(question)
        self.question = question


@dataclass
class ToolContext:
    """What a tool may touch: the step it serves and the swarm's services."""

    objective_id: int
    step_id: int
    team_id: str
    recall: Callable[[str, int], Awaitable[list[str]]]
    add_note: Callable[[str], Awaitable[None]]


ToolFn = Callable[..., Awaitable[str]]


@dataclass(frozen=True)
class Tool:
    name: str
    fn: ToolFn
    schema: dict[str, Any]


def _schema(fn: ToolFn) -> dict[str, Any]:
    hints = get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())[1:]  # first is the ToolContext
    props, required = {}, []
    for p in params:
        props[p.name] = {"type": _JSON_TYPES.get(hints.get(p.name, str), "string")}
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
    doc = inspect.getdoc(fn) or fn.__name__
    return {"type": "function", "function": {
        "name": fn.__name__, "description": doc,
        "parameters": {"type": "object", "properties": props, "required": required}}}


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def add(self, fn: ToolFn) -> ToolFn:
        self._tools[fn.__name__] = Tool(fn.__name__, fn, _schema(fn))
        return fn

    def load_plugins(self) -> None:
        """Tools from other packages, declared under the `threadswarm.tools` entry point."""
        for ep in entry_points(group="threadswarm.tools"):
            try:
                self.add(ep.load())
            except Exception:
                log.exception("tools.plugin_failed name=%s", ep.name)

    def schemas(self, names: tuple[str, ...]) -> list[dict[str, Any]]:
        return [self._tools[n].schema for n in names if n in self._tools]

    async def call(self, name: str, ctx: ToolContext, arguments: dict[str, Any], *,
                   allowed: tuple[str, ...] | None = None) -> str:
        """Run a tool the model called; `allowed` is the role's allow-list (roles file): a
        tool it does not name is refused, whatever the model asks."""
        tool = self._tools.get(name)
        if tool is None:
            return f"error: there is no tool named {name!r}"
        if allowed is not None and name not in allowed:
            log.warning("tools.refused tool=%s objective=%s step=%s", name, ctx.objective_id,
                        ctx.step_id)
            return f"error: the tool {name!r} is not allowed for this role"
        if "_invalid" in arguments:
            return "error: the arguments were not a JSON object; call the tool again"
        try:
            return await tool.fn(ctx, **arguments)
        except NeedsHumans:
            raise
        except TypeError as exc:
            return f"error: bad arguments for {name}: {exc}"


async def ask_humans(ctx: ToolContext, question: str) -> str:
    """Ask the humans in the thread one clear question and wait for their answer."""
    raise NeedsHumans(question)


async def recall(ctx: ToolContext, query: str, k: int = 5) -> str:
    """Search the team's memory of earlier decisions and results."""
    found = await ctx.recall(query, k)
    return json.dumps(found) if found else "nothing relevant in team memory"


async def note(ctx: ToolContext, text: str) -> str:
    """Add a note to the objective's shared notes, which every later step reads."""
    await ctx.add_note(text)
    return "noted"


def default_tools() -> ToolRegistry:
    registry = ToolRegistry()
    for fn in (ask_humans, recall, note):
        registry.add(fn)
    registry.load_plugins()
    return registry
