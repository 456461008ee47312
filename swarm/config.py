"""Settings read from the environment (prefix THREADSWARM_, plus the conventional names)."""
from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

OFFLINE_MODEL = "offline/rehearsal"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="THREADSWARM_", env_file=".env", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Path(".threadswarm")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "THREADSWARM_DATABASE_URL")
    )
    port: int = Field(default=3000, validation_alias=AliasChoices("PORT", "THREADSWARM_PORT"))

    model: str = OFFLINE_MODEL
    planner_model: str | None = None
    worker_model: str | None = None
    fast_model: str | None = None
    offline_latency_ms: float = 250.0
    llm_timeout_s: float = 60.0

    max_concurrent_steps: int = 16
    max_concurrent_steps_per_objective: int = 4
    max_plan_steps: int = 12
    plan_repair_attempts: int = 2
    max_revisions: int = 2
    max_tool_rounds: int = 4

    approvers: list[str] = []
    roles_file: Path | None = None
    embedding_model: str | None = None
    memory_enabled: bool = True
    recall_k: int = 5

    def model_for(self, tier: str) -> str:
        override = {"planner": self.planner_model, "worker": self.worker_model,
                    "fast": self.fast_model}.get(tier)
        return override or self.model

    @property
    def url(self) -> str:
        if self.database_url:
            return self.database_url.replace("postgres://", "postgresql+psycopg://", 1).replace(
                "postgresql://", "postgresql+psycopg://", 1
            )
        return f"sqlite:///{self.data_dir / 'threadswarm.db'}"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "memory"
