"""Workspaces and their bot tokens: one from SLACK_BOT_TOKEN, or many installed through OAuth."""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import Engine

from bot.slack.settings import BOT_SCOPES, SlackSettings

if TYPE_CHECKING:  # slack_sdk's SQLAlchemy stores import sqlalchemy.ext.asyncio (greenlet)
    from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
    from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore

log = logging.getLogger(__name__)
STATE_EXPIRATION_S = 600


class NotInstalled(LookupError):
    """The workspace has no installation of the app (it was removed, or never added)."""


class BotTokens(Protocol):
    async def __call__(self, team_id: str) -> str: ...


class StaticToken:
    """One workspace: the SLACK_BOT_TOKEN, whatever the team, until Slack says it was revoked
    (the app uninstalled): then nothing more is sent with it, and what waits is given up."""

    def __init__(self, token: str) -> None:
        self._token: str | None = token

    async def __call__(self, team_id: str) -> str:
        if self._token is None:
            raise NotInstalled("the Slack bot token was revoked (the app was uninstalled)")
        return self._token

    def revoke(self, why: str) -> None:
        if self._token is not None:
            log.warning("slack.bot_token_revoked why=%s", why)
        self._token = None


def revoke_on_uninstall(app: AsyncApp, token: StaticToken) -> None:
    """Single-workspace mode: tokens_revoked (of a bot token) and app_uninstalled are answered
    200, as in OAuth mode (bolt's listeners delete the installation there), and end the token."""

    @app.event("tokens_revoked")
    async def on_tokens_revoked(event: dict[str, Any]) -> None:
        tokens = event.get("tokens")
        if isinstance(tokens, dict) and tokens.get("bot"):
            token.revoke("tokens_revoked")

    @app.event("app_uninstalled")
    async def on_app_uninstalled() -> None:
        token.revoke("app_uninstalled")


class InstalledTokens:
    """Many workspaces: each team's bot token from the installation store."""

    def __init__(self, store: AsyncInstallationStore) -> None:
        self.store = store

    async def __call__(self, team_id: str) -> str:
        bot = await self.store.async_find_bot(enterprise_id=None, team_id=team_id)
        if bot is None or not bot.bot_token:
            raise NotInstalled(f"threadswarm is not installed in Slack team {team_id}")
        return bot.bot_token


class ThreadedInstallationStore(AsyncInstallationStore):
    """slack_sdk's SQLAlchemy store (synchronous) for bolt's asyncio side: calls run in a thread."""

    def __init__(self, store: SQLAlchemyInstallationStore) -> None:
        self.store = store

    @property
    def logger(self) -> logging.Logger:
        return self.store.logger

    async def async_save(self, installation: Installation) -> None:
        await asyncio.to_thread(self.store.save, installation)

    async def async_save_bot(self, bot: Bot) -> None:
        await asyncio.to_thread(self.store.save_bot, bot)

    async def async_find_bot(self, *, enterprise_id: str | None, team_id: str | None,
                             is_enterprise_install: bool | None = False) -> Bot | None:
        return await asyncio.to_thread(self.store.find_bot, enterprise_id=enterprise_id,
                                       team_id=team_id,
                                       is_enterprise_install=is_enterprise_install)

    async def async_find_installation(self, *, enterprise_id: str | None, team_id: str | None,
                                      user_id: str | None = None,
                                      is_enterprise_install: bool | None = False
                                      ) -> Installation | None:
        return await asyncio.to_thread(self.store.find_installation,
                                       enterprise_id=enterprise_id, team_id=team_id,
                                       user_id=user_id,
                                       is_enterprise_install=is_enterprise_install)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await asyncio.to_thread(self.store.delete_bot, enterprise_id=enterprise_id,
                                team_id=team_id)

    async def async_delete_installation(self, *, enterprise_id: str | None,
                                        team_id: str | None, user_id: str | None = None) -> None:
        await asyncio.to_thread(self.store.delete_installation, enterprise_id=enterprise_id,
                                team_id=team_id, user_id=user_id)


class ThreadedStateStore(AsyncOAuthStateStore):
    """slack_sdk's SQLAlchemy OAuth state store for bolt's asyncio side."""

    def __init__(self, store: SQLAlchemyOAuthStateStore) -> None:
        self.store = store

    @property
    def logger(self) -> logging.Logger:
        return self.store.logger

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        return await asyncio.to_thread(self.store.issue, *args, **kwargs)

    async def async_consume(self, state: str) -> bool:
        return await asyncio.to_thread(self.store.consume, state)


def installation_store(settings: SlackSettings, engine: Engine) -> ThreadedInstallationStore:
    """The installations, in the swarm's own database (tables created when missing)."""
    from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore

    assert settings.client_id is not None
    store = SQLAlchemyInstallationStore(client_id=settings.client_id, engine=engine, logger=log)
    store.create_tables()
    return ThreadedInstallationStore(store)


def oauth_settings(settings: SlackSettings, engine: Engine, store: ThreadedInstallationStore,
                   client: AsyncWebClient) -> AsyncOAuthSettings:
    from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore

    assert settings.client_id is not None and settings.client_secret is not None
    states = SQLAlchemyOAuthStateStore(expiration_seconds=STATE_EXPIRATION_S, engine=engine,
                                       logger=log)
    states.create_tables()
    secret = settings.client_secret.get_secret_value()
    oauth = AsyncOAuthSettings(
        client_id=settings.client_id, client_secret=secret, scopes=BOT_SCOPES, user_scopes=[],
        install_path=settings.install_path, redirect_uri_path=settings.redirect_uri_path,
        installation_store=store, installation_store_bot_only=True,
        state_store=ThreadedStateStore(states), state_expiration_seconds=STATE_EXPIRATION_S,
        logger=log)
    # Bolt's default authorizer calls auth.test on every request, before the ack: cache it.
    oauth.authorize = AsyncInstallationStoreAuthorize(
        logger=log, installation_store=store, client_id=settings.client_id, client_secret=secret,
        bot_only=True, cache_enabled=True, client=client)
    return oauth
