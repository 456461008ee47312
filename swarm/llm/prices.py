"""What litellm knows of the configured models: prices from settings, unpriced ones, prefixes."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import litellm
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from swarm.config import Settings, SettingsError

log = logging.getLogger(__name__)
SETTING = "THREADSWARM_MODEL_PRICES"
_EXAMPLE = '{"anthropic/claude-3-5-haiku-20241022": {"input": 0.8, "output": 4, "cached": 0.08}}'
_USD_BUDGETS = (("THREADSWARM_OBJECTIVE_BUDGET_USD", "objective_budget_usd"),
                ("THREADSWARM_TEAM_MONTHLY_BUDGET_USD", "team_monthly_budget_usd"))
_registered: dict[str, ModelPrice] = {}


class ModelPrice(BaseModel):
    """USD per million tokens; cached (prompt tokens read from the provider's cache) defaults to
    the input price, so an unstated cache discount never makes a call look cheaper than it is."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached: float | None = Field(default=None, ge=0)

    def litellm_entry(self, model: str) -> dict[str, object]:
        cached = self.input if self.cached is None else self.cached
        entry: dict[str, object] = {"input_cost_per_token": self.input / 1e6,
                                    "output_cost_per_token": self.output / 1e6,
                                    "cache_read_input_token_cost": cached / 1e6, "mode": "chat"}
        if "/" in model:  # else litellm may file it under another provider's key (measured: an
            entry["litellm_provider"] = model.split("/", 1)[0]  # ollama_chat/ model as ollama/)
        return entry


def parse_prices(raw: str | None) -> dict[str, ModelPrice]:
    """THREADSWARM_MODEL_PRICES as JSON, or read from the YAML file it names."""
    text = (raw or "").strip()
    if not text:
        return {}
    try:
        if text.startswith("{"):
            data = json.loads(text)
        else:
            data = yaml.safe_load(Path(text).expanduser().read_text())
    except OSError as exc:
        raise SettingsError(f"{SETTING} is neither JSON nor a readable YAML file ({text[:80]!r}: "
                            f"{exc.strerror}); give e.g. {_EXAMPLE}.") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise SettingsError(f"{SETTING} could not be parsed ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120]}); give e.g. {_EXAMPLE}.") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{SETTING} must map each model to its prices, e.g. {_EXAMPLE}.")
    prices: dict[str, ModelPrice] = {}
    for model, spec in data.items():
        try:
            prices[str(model)] = ModelPrice.model_validate(spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "value"
            raise SettingsError(f"{SETTING}: {model}: {where}: {first['msg']}; each model needs "
                                f"input and output in USD per million tokens (cached is "
                                f"optional), e.g. {_EXAMPLE}.") from None
    return prices


def register_prices(prices: dict[str, ModelPrice]) -> None:
    """Through litellm's public registration, over its built-in list; each price once."""
    fresh = {m: p.litellm_entry(m) for m, p in prices.items() if _registered.get(m) != p}
    if fresh:
        litellm.register_model(fresh)
        _registered.update({m: prices[m] for m in fresh})
        log.info("llm.prices_registered models=%s", ",".join(sorted(fresh)))


def is_priced(model: str) -> bool:
    """Whether litellm has a price for `model` (built in, or registered from settings). Measured
    on litellm 1.110: get_model_info raises for a model it does not know, and building a Router
    registers each deployment's model with no prices, which get_model_info and cost_per_token
    then report as 0; so the entry of the key litellm resolves the model to is read."""
    try:
        key = litellm.get_model_info(model)["key"]
    except Exception:
        return False
    entry = litellm.model_cost.get(key) or {}
    return entry.get("input_cost_per_token") is not None \
        and entry.get("output_cost_per_token") is not None


def check_models(settings: Settings, models: Iterable[str]) -> list[str]:
    """At start-up: register the configured prices, warn once per unpriced model, and refuse a
    USD budget that an unpriced model would slip past. Returns the unpriced models."""
    register_prices(parse_prices(settings.model_prices))
    unpriced = [m for m in dict.fromkeys(models) if not is_priced(m)]
    for model in unpriced:
        log.warning("llm.unpriced_model model=%s cost=unknown hint=%s", model,
                    f"set its price in {SETTING}")
    budgets = [name for name, field in _USD_BUDGETS if getattr(settings, field) is not None]
    if unpriced and budgets:
        if not settings.allow_unpriced:
            raise SettingsError(
                f"{' and '.join(budgets)} cannot be enforced: litellm has no price for "
                f"{', '.join(unpriced)}. Set {SETTING} (e.g. {_EXAMPLE}), or set "
                f"THREADSWARM_ALLOW_UNPRICED=true to run on token ceilings only.")
        log.warning("budget.usd_unenforced budgets=%s unpriced=%s reason=%s", ",".join(budgets),
                    ",".join(unpriced), "THREADSWARM_ALLOW_UNPRICED: token ceilings only")
    return unpriced


def unpriced_call(model: str, tier: str, objective_id: int | None) -> None:
    """The log line of the first call to an unpriced model (its cost is recorded as unknown)."""
    log.warning("llm.unpriced_call model=%s tier=%s objective=%s cost=unknown hint=%s",
                model, tier, objective_id, f"set its price in {SETTING}")


def warn_tool_prefixes(models_by_tier: dict[str, tuple[str, ...]], tool_tiers: set[str]) -> None:
    """litellm answers an `ollama/` call that offers tools by forcing JSON output and putting the
    tools into the prompt, so a worker's answer comes back as JSON; `ollama_chat/` sends the
    tools to Ollama's chat API, which calls them natively."""
    for tier in sorted(tool_tiers):
        for model in models_by_tier.get(tier, ()):
            if model.startswith("ollama/"):
                log.warning("llm.ollama_prefix_breaks_tools tier=%s model=%s use=%s", tier,
                            model, "ollama_chat/" + model.removeprefix("ollama/"))
