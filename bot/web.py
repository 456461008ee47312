"""The one HTTP server of `serve`: the edges' routes, /healthz, /metrics; on the ingress loop."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from sqlalchemy import text

from bot import metrics
from bot.edges import Edge
from bot.loop_thread import LoopThread
from bot.runtime import Runtime
from bot.shutdown import run_bounded

log = logging.getLogger(__name__)
# Shutdown: requests in flight get this long to finish (an ack is quick; a handler stuck on a
# platform that does not answer is not), and so does each edge's disconnect.
REQUESTS_GRACE_S = DISCONNECT_S = 2.0
HEALTH_CHECK_S = 2.0  # each part of /healthz answers within this or counts as unreachable


class WebServer:
    """HTTP on PORT (the edges' routes, `GET /healthz`, `GET /metrics`) and the edges'
    long-lived connections run on an ingress loop in its own thread, so acks never wait for the
    swarm's loop."""

    def __init__(self, runtime: Runtime, edges: list[Edge]) -> None:
        self.runtime, self.edges = runtime, edges
        self.ingress = LoopThread("ingress")
        self._runner: web.AppRunner | None = None
        self.metrics = metrics.registry(runtime.db)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        for edge in self.edges:
            edge.routes(app)
        return app

    async def start(self, host: str, port: int) -> None:
        """Listen and connect the edges; returns once they do."""
        self.ingress.start()
        await self.ingress.run(self._open(host, port))

    async def _open(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None,
                                     shutdown_timeout=REQUESTS_GRACE_S)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        for edge in self.edges:
            await edge.connect()

    @property
    def port(self) -> int:
        """The port HTTP listens on (the one the OS chose when start() was given 0)."""
        assert self._runner is not None, "start() first"
        return int(self._runner.addresses[0][1])

    async def close(self) -> None:
        """Within seconds, also when a platform does not answer (platforms kill at 30 s): no
        new requests, the dispatcher stopped (a delivery hanging past its grace is cancelled
        and stays in the outbox), then the edges close, leaving what they owe in the outbox."""
        if self.ingress.running:
            await self.ingress.run(self._shut())
        await self.ingress.stop()
        await self.runtime.dispatcher.stop()
        for edge in self.edges:
            await edge.close()

    async def _shut(self) -> None:
        for edge in self.edges:
            await run_bounded(edge.disconnect(), DISCONNECT_S, f"{edge.platform}.disconnect")
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        """200 when the database, the broker (with the Celery executor) and every platform
        connection answer; else 503, the JSON body naming what failed. Each check is bounded:
        a probe must hear back before its own timeout."""
        body: dict[str, Any] = {"ok": True, "database": "ok"}
        checks = {"database": self._ping}
        if self.runtime.settings.executor == "celery":
            body["broker"] = "ok"
            checks["broker"] = self._broker
        for name, check in checks.items():
            try:
                await asyncio.wait_for(asyncio.to_thread(check), HEALTH_CHECK_S)
            except Exception as exc:
                log.warning("web.healthz_failed part=%s error=%s", name, type(exc).__name__)
                body.update({"ok": False, name: "unreachable"})
        for edge in self.edges:
            part = edge.health()
            body[edge.platform] = part
            if part.get("ok") is False:
                body["ok"] = False
        return web.json_response(body, status=200 if body["ok"] else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        """Read from the database at each scrape (off the ingress loop: acks never wait)."""
        body = await asyncio.to_thread(metrics.exposition, self.metrics)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    def _ping(self) -> None:
        with self.runtime.db.read() as s:
            s.execute(text("select 1"))

    def _broker(self) -> None:
        from kombu import Connection  # Celery's messaging library

        url = self.runtime.settings.celery_broker_url
        with Connection(url, connect_timeout=HEALTH_CHECK_S) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                   timeout=HEALTH_CHECK_S)
