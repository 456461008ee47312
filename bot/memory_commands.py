"""`threadswarm memory ...`: search, remember, forget and list a team's memories."""

from __future__ import annotations

import argparse
import asyncio

from memory import KINDS, Recalled, TeamMemory

DEFAULT_TEAM = "local"
_TEXT_WIDTH = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `memory` and its sub-commands. Each sets `func`, an async (args, memory) -> exit
    code, and `needs_memory=True` so that `main` knows to open a TeamMemory for it."""
    memory = subparsers.add_parser("memory", help="search, add to or prune team memory")
    sub = memory.add_subparsers(dest="memory_command", required=True)

    search = sub.add_parser("search", help="memories closest in meaning to QUERY")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="how many (default 5)")
    search.add_argument("--kind", action="append", help="only this kind (repeatable)")
    _team_flag(search)
    search.set_defaults(func=cmd_search, needs_memory=True)

    remember = sub.add_parser("remember", help="remember TEXT")
    remember.add_argument("text")
    remember.add_argument("--kind", default="note", help=f"one of {', '.join(KINDS)}")
    _team_flag(remember)
    remember.set_defaults(func=cmd_remember, needs_memory=True)

    forget = sub.add_parser("forget", help="forget memory ID")
    forget.add_argument("id", type=int)
    _team_flag(forget)
    forget.set_defaults(func=cmd_forget, needs_memory=True)

    listing = sub.add_parser("list", help="newest memories first")
    listing.add_argument("--kind")
    listing.add_argument("--limit", type=int, default=50)
    _team_flag(listing)
    listing.set_defaults(func=cmd_list, needs_memory=True)


async def cmd_search(args: argparse.Namespace, memory: TeamMemory) -> int:
    found = await memory.recall(args.team, args.query, args.k, kinds=args.kind)
    if not found:
        print(f"No memories of team {args.team} match.")
    for item in found:
        print(_line(item, with_score=True))
    return 0


async def cmd_remember(args: argparse.Namespace, memory: TeamMemory) -> int:
    try:
        memory_id = await memory.remember(args.team, args.text, kind=args.kind, author="cli")
    except ValueError as exc:
        print(f"Not remembered: {exc}")
        return 1
    await asyncio.to_thread(memory.flush)
    print(f"Remembered #{memory_id} ({args.kind}) for team {args.team}.")
    return 0


async def cmd_forget(args: argparse.Namespace, memory: TeamMemory) -> int:
    if not await memory.forget(args.team, args.id):
        print(f"Team {args.team} has no memory #{args.id}; `threadswarm memory list` shows them.")
        return 1
    await asyncio.to_thread(memory.flush)
    print(f"Forgot #{args.id} of team {args.team}.")
    return 0


async def cmd_list(args: argparse.Namespace, memory: TeamMemory) -> int:
    items = memory.list(args.team, kind=args.kind, limit=args.limit)
    if not items:
        kind = f" of kind {args.kind}" if args.kind else ""
        print(f"Team {args.team} has no memories{kind} yet.")
    for item in items:
        print(_line(item, with_score=False))
    return 0


def _team_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", default=DEFAULT_TEAM, help=f"team id (default {DEFAULT_TEAM})")


def _line(item: Recalled, *, with_score: bool) -> str:
    text = " ".join(item.text.split())
    if len(text) > _TEXT_WIDTH:
        text = text[: _TEXT_WIDTH - 1] + "…"
    score = f"  {item.score:.3f}" if with_score else ""
    objective = f"  objective #{item.objective_id}" if item.objective_id is not None else ""
    when = item.created_at.strftime("%Y-%m-%d %H:%M")
    return f"#{item.id}{score}  {when}  {item.kind}{objective}  {text}"
