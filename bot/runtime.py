"""The composition root: settings, database, memory, swarm and dispatcher wired together."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.adapter import ChatAdapter
from bot.dispatcher import Dispatcher
from bot.shutdown import run_bounded
from schedules.clock import Clock
from schedules.grounding import Grounder
from swarm.config import Settings
from swarm.engine.driver import Executor
from swarm.redact import RedactingFilter
from swarm.services.objectives import Swarm
from swarm.store import migrate as migrations
from swarm.store.db import Database

log = logging.getLogger(__name__)
SWARM_SHUTDOWN_S = 10.0  # cancelled steps and planning end at their next await
MEMORY_FLUSH_S = 30.0  # writing the index files of a large team memory takes a while


def configure_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def open_memory(settings: Settings, db: Database) -> Any:
    from memory import Embedder, TeamMemory

    memory = TeamMemory(db.engine, settings.index_dir, Embedder(settings.embedding_model))
    memory.load()
    return memory


def step_executor(settings: Settings, db: Database) -> Executor | None:
    """THREADSWARM_EXECUTOR: None runs steps in this process; celery sends them to workers."""
    if settings.executor != "celery":
        return None
    from swarm.engine.queue import CeleryExecutor, celery_app  # Celery loads only when used

    return CeleryExecutor(celery_app(settings.celery_broker_url, settings.celery_queue), db)


class Runtime:
    """One process's swarm with its adapters; `settle()` waits until nothing can move.
    `drive=False` is a worker's: it runs the steps it is sent and drives no objective."""

    def __init__(self, settings: Settings, *, memory: bool | None = None,
                 migrate: bool = False, drive: bool = True) -> None:
        """`migrate`: upgrade the database's schema first (the console on its SQLite file);
        else a database not at this code's revision stops it (SchemaNotCurrent says why)."""
        self.settings = settings
        self.db = Database.connect(settings.url)
        try:
            migrations.upgrade(self.db) if migrate else migrations.check(self.db)
        except BaseException:
            self.db.close()
            raise
        use_memory = settings.memory_enabled if memory is None else memory
        self.memory = open_memory(settings, self.db) if use_memory else None
        self.swarm = Swarm(settings, self.db, memory=self.memory,
                           executor=step_executor(settings, self.db) if drive else None)
        self.swarm.engine.driving = drive
        self.swarm.engine.runner.check_claims = not drive
        self._watch: asyncio.Task[None] | None = None
        # grounding checks run wherever steps run; the clock adds the scheduled ones
        self.grounder = Grounder(self.swarm, self.memory.embedder if self.memory else None)
        self.swarm.engine.checkpoint = self.grounder.checkpoint
        self.clock: Clock | None = None
        self.dispatcher = Dispatcher(
            self.db, [], poll_s=settings.outbox_poll_s, max_attempts=settings.outbox_max_attempts,
            keep_delivered_s=settings.outbox_keep_delivered_hours * 3600)

    def add_adapter(self, adapter: ChatAdapter) -> None:
        self.dispatcher.adapters[adapter.platform] = adapter

    def start(self) -> None:
        self.dispatcher.start()

    def watch_running(self) -> None:
        """Drive the running objectives this process did not start driving (several driving
        processes, or steps on workers: swarm.engine.driver.Driver.watch_running)."""
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(
                self.swarm.engine.watch_running(self.settings.watch_running_s))

    def start_clock(self) -> None:
        """The scheduler (one per database: `serve` runs it unless THREADSWARM_SCHEDULER_ENABLED
        is off, e.g. for a web-only process)."""
        if self.settings.scheduler_enabled and self.clock is None:
            self.clock = Clock(self.swarm, self.grounder)
            self.clock.start()

    async def settle(self, *adapters: Any) -> None:
        """Run until the swarm rests: only humans (or nothing) can move it further."""
        while True:
            await self.swarm.join()
            moved = await self.dispatcher.drain()
            prompted = [await a.prompts_done() for a in adapters if hasattr(a, "prompts_done")]
            if any(prompted) or self.swarm.busy:
                continue
            if not self.dispatcher.has_pending():
                return
            if not moved:  # another process holds the rows, or held them before it died
                await asyncio.sleep(self.dispatcher.poll_s)

    async def close(self) -> None:
        """Each step is bounded (and logged when it overruns), so the process always exits."""
        if self.clock is not None:
            self.clock.shutdown()
        if self._watch is not None:
            self._watch.cancel()
        await run_bounded(self.swarm.shutdown(), SWARM_SHUTDOWN_S, "swarm.shutdown")
        await self.dispatcher.stop()
        if self.memory is not None:  # cancels the debounced write and flushes the indexes
            await run_bounded(self.memory.aclose(), MEMORY_FLUSH_S, "memory.aclose")
        self.db.close()
