"""Slack settings from the environment, under Slack's conventional SLACK_* names."""
from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_API_URL = "https://slack.com/api/"
# What the bot needs; keep in step with manifest.yml.
BOT_SCOPES = ["app_mentions:read", "channels:history", "groups:history", "chat:write",
              "commands", "reactions:read", "reactions:write", "files:write",
              "users:read"]  # users.info: is the user a workspace admin
# Not asked for: assistant:write (agent sessions). Slack adds it when the app is declared an
# agent in its settings; asked for by an app that is not one, it would refuse the install.


class SlackSettings(BaseSettings):
    """Secrets are SecretStr: their repr is masked, so they cannot leak into a log line."""

    # An empty variable means unset, as in swarm Settings: a copied .env.example works as is.
    model_config = SettingsConfigDict(env_prefix="SLACK_", env_file=".env", extra="ignore",
                                      env_ignore_empty=True)

    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None  # set: Socket Mode instead of HTTP
    api_url: str | None = None  # the Web API base URL (tests point it at a local fake)
    client_id: str | None = None
    client_secret: SecretStr | None = None
    install_path: str = "/slack/install"
    redirect_uri_path: str = "/slack/oauth_redirect"

    @property
    def socket_mode(self) -> bool:
        return self.app_token is not None

    @property
    def oauth(self) -> bool:
        return bool(self.client_id and self.client_secret)

    @property
    def base_url(self) -> str:
        url = self.api_url or DEFAULT_API_URL
        return url if url.endswith("/") else url + "/"

    @property
    def configured(self) -> bool:
        """Any Slack setting is there: the operator means to run Slack."""
        return any(v is not None for v in (self.bot_token, self.signing_secret, self.app_token,
                                           self.client_id, self.client_secret))

    def problems(self) -> list[str]:
        """What keeps the Slack edge from starting, each as a sentence the operator can act on."""
        found = []
        if not self.oauth and self.bot_token is None:
            found.append("Set SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
                         "SLACK_CLIENT_SECRET (installs into many workspaces through OAuth).")
        if not self.socket_mode and self.signing_secret is None:
            found.append("Set SLACK_SIGNING_SECRET (Basic Information of your Slack app), or "
                         "SLACK_APP_TOKEN to use Socket Mode instead of HTTP.")
        return found
