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


def quote(source: str, text: str) -> str:
    """Text a model must read as data, never as instructions (team memory, tool outputs): in a
    <data> block it cannot close early, under the rule every system prompt carries."""
    inner = text.replace("</data", "<\\/data")
    return f'<data source="{source}">\n{inner}\n</data>'
