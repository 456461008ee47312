"""`threadswarm serve`: the web process, with the swarm, its dispatcher and the chat edges."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys

from bot.runtime import Runtime
from swarm.config import Settings

log = logging.getLogger(__name__)
ROLES = ("all", "web", "clock")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="serve the configured chat platforms (Slack: HTTP or "
                                         "Socket Mode; Discord: the gateway) and run the "
                                         "swarm")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (PORT sets the "
                                                         "port)")
    serve.add_argument("--role", choices=ROLES, default="all",
                       help="all: everything in one process (the default); web: the chat edges, "
                            "the outbox dispatcher and the objectives' drivers (any number of "
                            "replicas); clock: the scheduler alone (exactly one per database)")
    serve.set_defaults(func=cmd_serve)


def tune_for_acks() -> None:
    """Process settings that keep acks quick while the swarm is busy (see bench/ack.py).

    The ingress thread needs the GIL for a moment per request: a 1 ms switch interval (5 ms by
    default) lets it in sooner while the swarm's loop computes. Freezing what start-up built
    (several hundred thousand objects of litellm, pydantic, SQLAlchemy) keeps the collector
    from walking it again and again: full collections took 0.5-1.9 s before, stalling acks."""
    sys.setswitchinterval(0.001)
    gc.collect()
    gc.freeze()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, stop.set)
    return stop


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.role == "clock":
        return await _clock(settings)
    from bot.edges import build_edges  # each platform's SDK loads only for this command
    from bot.web import WebServer

    stop = _stop_on_signals()
    runtime = Runtime(settings)
    edges, problems = build_edges(runtime)
    if problems:
        print("threadswarm serve cannot start:\n" + "\n".join(f"- {p}" for p in problems),
              file=sys.stderr)
        await runtime.close()
        return 2
    for edge in edges:
        runtime.add_adapter(edge.adapter)
    server = WebServer(runtime, edges)
    try:
        resumed = await runtime.swarm.recover()
        log.info("serve.recovered objectives=%s", resumed)
        runtime.start()
        if args.role == "all":
            runtime.start_clock()
        if args.role == "web" or settings.executor == "celery":
            runtime.watch_running()
        tune_for_acks()
        await server.start(args.host, settings.port)
        names = ", ".join(f"{e.platform} ({e.health().get('mode', 'on')})" for e in edges)
        print(f"threadswarm serving {names} on {args.host}:{settings.port}; /healthz answers. "
              f"Ctrl-C stops.", file=sys.stderr)
        await stop.wait()
        return 0
    finally:
        await server.close()
        await runtime.close()


async def _clock(settings: Settings) -> int:
    """`serve --role clock`: APScheduler alone (one per database: APScheduler 3 cannot share a
    job store). Objectives its jobs start are driven here too, their steps run by the executor."""
    stop = _stop_on_signals()
    settings.scheduler_enabled = True
    runtime = Runtime(settings)
    try:
        runtime.start_clock()
        print("threadswarm clock running the schedules. Ctrl-C stops.", file=sys.stderr)
        await stop.wait()
        return 0
    finally:
        await runtime.close()
