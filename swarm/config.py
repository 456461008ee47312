"""Settings read from the environment (prefix THREADSWARM_, plus the conventional names)."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

OFFLINE_MODEL = "offline/rehearsal"


class SettingsError(ValueError):
    """A setting that cannot work as given; the message names it and says what to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="THREADSWARM_", env_file=".env", extra="ignore", populate_by_name=True,
        env_ignore_empty=True,
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

    # Self-healing: ordered fallbacks per tier (`fallbacks` serves a tier without its own list),
    # retries with backoff, and a cool-down that skips a model which keeps failing.
    fallbacks: list[str] = []
    planner_fallbacks: list[str] | None = None
    worker_fallbacks: list[str] | None = None
    fast_fallbacks: list[str] | None = None
    model_api_bases: dict[str, str] = {}  # model -> the provider's base URL (litellm api_base)
    # USD per million tokens, model -> {input, output, cached}: JSON, or the path of a YAML file.
    # Registered with litellm, over its built-in price list (swarm.llm.prices).
    model_prices: str | None = None
    # Run a USD budget although a model has no price: only its token ceiling can then hold.
    allow_unpriced: bool = False
    llm_retries: int = 2  # per model, on 429 (after Retry-After), 5xx, timeouts, lost connections
    llm_allowed_fails: int = 3  # failures within llm_cooldown_s before a model is skipped
    llm_cooldown_s: float = 30.0
    llm_max_tokens: int = 4096  # the completion allowance of every call (and of its estimate)
    structured_repair_attempts: int = 2  # re-asks per model when structured output is invalid
    max_troubleshoots_per_step: int = 2
    max_troubleshoots_per_objective: int = 4
    max_replan_steps: int = 4

    # Budgets: unset is unlimited. A call that would pass a ceiling pauses the objective and
    # asks for approval; approving multiplies the ceiling that was hit by budget_raise_factor.
    objective_budget_usd: float | None = None
    objective_budget_tokens: int | None = None
    team_monthly_budget_usd: float | None = None
    team_monthly_budget_tokens: int | None = None
    budget_raise_factor: float = 2.0

    # Fault injection into the offline model, e.g. "429:0.2,500:0.1,timeout:0.05,bad_json:0.1"
    offline_faults: str | None = None
    offline_fault_seed: int = 1

    # A running step's lease: renewed every third of it; another process takes the step over
    # once it lapses (at once if its owner is a process on this machine that has exited).
    lease_s: float = 30.0

    # Where step runs run: in the driving process ("inprocess"), or as Celery tasks on
    # `threadswarm worker` processes ("celery") through the broker at CELERY_BROKER_URL.
    executor: Literal["inprocess", "celery"] = "inprocess"
    celery_broker_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672//",
        validation_alias=AliasChoices("CELERY_BROKER_URL", "THREADSWARM_CELERY_BROKER_URL"))
    celery_queue: str = "threadswarm.steps"
    # A driving process looks this often for running objectives nobody here drives (a worker's
    # team, another web replica's objective after it stopped)
    watch_running_s: float = 5.0

    max_concurrent_steps: int = 16
    max_concurrent_steps_per_objective: int = 4
    max_plan_steps: int = 12
    # Teams: a step may be planned as a team of its own (a child objective with its own plan),
    # nested at most max_depth deep, with at most max_tree_steps steps across the whole tree. A
    # team's budget is team_budget_share of what its parent has left when the team starts.
    max_depth: int = 2
    max_tree_steps: int = 40
    team_budget_share: float = 0.5
    plan_repair_attempts: int = 2
    max_revisions: int = 2
    max_tool_rounds: int = 4

    # The outbox: a failing delivery is tried this many times in all, then dead-lettered
    # (kept, not retried); delivered rows are deleted once this old.
    outbox_max_attempts: int = 8
    outbox_keep_delivered_hours: float = 24.0
    # How often a dispatcher looks for due rows unwoken: retries that came due, threads of a
    # process that died. New rows wake it at once (in its process, or by PostgreSQL NOTIFY).
    outbox_poll_s: float = 1.0

    # Schedules (schedules/): one APScheduler per database; `serve` runs it unless this is off
    # (a web-only process). Durations: ISO 8601 (PT30M) or HH:MM:SS in the environment.
    scheduler_enabled: bool = True
    schedule_misfire_grace: timedelta = timedelta(hours=6)  # a firing this late still runs, once
    schedule_sync_every: timedelta = timedelta(seconds=30)  # digests and recurring goals re-read
    approval_sweep_every: timedelta = timedelta(seconds=60)  # reminders, expiry, policies
    approval_remind_after: timedelta = timedelta(hours=1)
    approval_expire_after: timedelta = timedelta(hours=24)
    grounding_every: timedelta = timedelta(minutes=30)
    grounding_after_steps: int = 3  # and a check after every K finished steps (0: never)
    grounding_min_similarity: float = 0.2  # the pre-filter: an output below it is off-topic

    # Who may decide approvals and who may administer, besides what `/swarm approvers` and
    # `/swarm admins` store per team in the database (and the platform's own admins).
    approvers: list[str] = []
    admins: list[str] = []
    approval_ttl_hours: float | None = None  # an approval older than this is refused as expired
    max_plan_rejections: int = 2  # rejections with feedback that replan; the next one cancels
    # Guardrails: extra secret patterns (regular expressions) to redact, and whether prompts
    # are redacted too before they reach a model.
    redact_patterns: list[str] = []
    redact_prompts: bool = False
    roles_file: Path | None = None
    embedding_model: str | None = None
    memory_enabled: bool = True
    recall_k: int = 5

    def model_for(self, tier: str) -> str:
        override = {"planner": self.planner_model, "worker": self.worker_model,
                    "fast": self.fast_model}.get(tier)
        return override or self.model

    def models_for(self, tier: str) -> list[str]:
        """The tier's primary model, then its fallbacks in order, each once."""
        own = {"planner": self.planner_fallbacks, "worker": self.worker_fallbacks,
               "fast": self.fast_fallbacks}.get(tier)
        chain = [self.model_for(tier), *(self.fallbacks if own is None else own)]
        return list(dict.fromkeys(m for m in chain if m))

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
