"""Prompt templates loaded from swarm/data/prompts.yaml."""
from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def _templates() -> dict[str, str]:
    return yaml.safe_load(resources.files("swarm").joinpath("data/prompts.yaml").read_text())


def render(name: str, **values: Any) -> str:
    return _templates()[name].format(**values).strip()
