"""Discord settings from the environment, under DISCORD_* names."""
from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_API_URL = "https://discord.com/api/v10"


class DiscordSettings(BaseSettings):
    """Secrets are SecretStr: their repr is masked, so they cannot leak into a log line."""

    model_config = SettingsConfigDict(env_prefix="DISCORD_", env_file=".env", extra="ignore",
                                      env_ignore_empty=True)

    token: SecretStr | None = None
    # The REST base, version included, and the gateway: for tests and proxies. Unset, the
    # gateway URL is the one Discord's REST API names (GET /gateway/bot).
    api_url: str = DEFAULT_API_URL
    gateway_url: str | None = None

    @property
    def configured(self) -> bool:
        return self.token is not None

    @property
    def api_base(self) -> str:
        return self.api_url.rstrip("/")
