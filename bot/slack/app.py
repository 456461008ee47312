"""The Slack edge of one process: the bolt app, its Web API client, the adapter, the transports."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.loop_thread import run_on
from bot.runtime import Runtime
from bot.slack import listeners
from bot.slack.adapter import SlackAdapter
from bot.slack.ingress import checked_request, on_error
from bot.slack.install import (
    BotTokens,
    InstalledTokens,
    StaticToken,
    installation_store,
    revoke_on_uninstall,
)
from bot.slack.install import oauth_settings as make_oauth_settings
from bot.slack.settings import SlackSettings
from bot.slack.socket import SocketMode

log = logging.getLogger(__name__)
T = TypeVar("T")
EVENTS_PATH = "/slack/events"


def from_environment(runtime: Runtime) -> tuple[SlackEdge | None, list[str]]:
    """The Slack edge when any SLACK_ setting is there (bot/edges.py's registry calls it)."""
    settings = SlackSettings()
    if not settings.configured:
        return None, []
    if problems := settings.problems():
        return None, problems
    return SlackEdge(runtime, settings), []


class SlackEdge:
    """Slack wired to a Runtime's swarm, as an edge of bot/web.py's server: its routes (events,
    OAuth) and, with SLACK_APP_TOKEN, Socket Mode run on the ingress loop. The adapter
    (outbound, called by the dispatcher) stays on the swarm's loop, the one the edge is built
    on."""

    platform = "slack"

    def __init__(self, runtime: Runtime, settings: SlackSettings, *,
                 progress_interval_s: float = 1.0, rate_limit_retries: int = 3) -> None:
        self.runtime, self.settings = runtime, settings
        bot_token = settings.bot_token.get_secret_value() if settings.bot_token else None
        # A 429 waits for Retry-After and goes again; past that the dispatcher retries later.
        self.client = AsyncWebClient(
            token=None if settings.oauth else bot_token, base_url=settings.base_url,
            retry_handlers=[AsyncConnectionErrorRetryHandler(),
                            AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries)])
        secret = settings.signing_secret.get_secret_value() if settings.signing_secret else ""
        # Bolt (and its Socket Mode client) log request bodies at INFO and DEBUG: keep them
        # at WARNING whatever the root level, so a payload never reaches a log line.
        bolt_log = logging.getLogger("slack_bolt.threadswarm")
        bolt_log.setLevel(logging.WARNING)
        # bolt checks the signature again; ours comes first, so an unsigned body is never parsed
        # (Socket Mode has no secret and no events route.)
        self.verifier = SignatureVerifier(secret) if secret else None
        tokens: BotTokens
        if settings.oauth:
            store = installation_store(settings, runtime.db.engine)
            tokens = InstalledTokens(store)
            self.app = AsyncApp(
                name="threadswarm", client=self.client, signing_secret=secret, logger=bolt_log,
                oauth_settings=make_oauth_settings(settings, runtime.db.engine, store,
                                                   self.client),
                raise_error_for_unhandled_request=True)
            self.app.enable_token_revocation_listeners()  # uninstalled: its tokens go
        else:
            assert bot_token is not None, "SlackSettings.problems() reports a missing token"
            static = tokens = StaticToken(bot_token)
            self.app = AsyncApp(name="threadswarm", client=self.client, signing_secret=secret,
                                logger=bolt_log, raise_error_for_unhandled_request=True)
            revoke_on_uninstall(self.app, static)
        self.app.error(on_error)
        self.adapter = SlackAdapter(runtime.swarm, self.client, tokens,
                                    progress_interval_s=progress_interval_s)
        listeners.register(self.app, runtime.swarm, self.adapter.refs, self._on_swarm)
        self.socket: SocketMode | None = None
        self._swarm_loop = asyncio.get_running_loop()

    def _on_swarm(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """From a listener (ingress loop): run a swarm call on the swarm's loop."""
        return run_on(self._swarm_loop, coro)

    def routes(self, app: web.Application) -> None:
        if not self.settings.socket_mode:  # in Socket Mode, events never come over HTTP
            app.router.add_post(EVENTS_PATH, self._bolt)
        if (flow := self.app.oauth_flow) is not None:
            app.router.add_get(flow.install_path, self._install)
            app.router.add_get(flow.redirect_uri_path, self._oauth_redirect)

    async def connect(self) -> None:
        if self.settings.app_token is not None:
            self.socket = SocketMode(self.app, self.settings.app_token.get_secret_value())
            await self.socket.connect()
        log.info("slack.serving socket_mode=%s oauth=%s", self.settings.socket_mode,
                 self.settings.oauth)

    async def disconnect(self) -> None:
        if self.socket is not None:
            await self.socket.close()

    def health(self) -> dict[str, object]:
        return {"ok": True, "mode": "socket" if self.settings.socket_mode else "http"}

    async def close(self) -> None:
        await self.adapter.close()

    # -- HTTP handlers ---------------------------------------------------------------------
    async def _bolt(self, request: web.Request) -> web.Response:
        # 401 if forged or stale, 400 if malformed (bot/slack/ingress); bolt acks before the
        # work runs.
        assert self.verifier is not None, "SlackSettings.problems() reports a missing secret"
        checked = await checked_request(request, self.verifier)
        if isinstance(checked, web.Response):
            return checked
        return await to_aiohttp_response(await self.app.async_dispatch(checked))

    async def _install(self, request: web.Request) -> web.Response:
        assert self.app.oauth_flow is not None
        return await to_aiohttp_response(await self.app.oauth_flow.handle_installation(
            await to_bolt_request(request)))

    async def _oauth_redirect(self, request: web.Request) -> web.Response:
        assert self.app.oauth_flow is not None
        return await to_aiohttp_response(await self.app.oauth_flow.handle_callback(
            await to_bolt_request(request)))
