"""Worker roles defined as data (swarm/data/roles.yaml plus a team's own file)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Role:
    name: str
    description: str
    system_prompt: str
    tier: str = "worker"
    risky: bool = False
    tools: tuple[str, ...] = ()
    plannable: bool = True


def _parse(raw: dict) -> dict[str, Role]:
    roles = {}
    for name, spec in (raw or {}).items():
        if spec.get("tier", "worker") not in ("planner", "worker", "fast"):
            raise ValueError(f"role {name}: tier must be planner, worker or fast")
        roles[name] = Role(name=name, description=spec["description"].strip(),
                           system_prompt=spec["system_prompt"].strip(),
                           tier=spec.get("tier", "worker"), risky=bool(spec.get("risky", False)),
                           tools=tuple(spec.get("tools", ())),
                           plannable=bool(spec.get("plannable", True)))
    return roles


def load_roles(extra: Path | None = None) -> dict[str, Role]:
    """The default roles, overridden and extended by a team's file when given."""
    text = resources.files("swarm").joinpath("data/roles.yaml").read_text()
    roles = _parse(yaml.safe_load(text))
    if extra is not None:
        roles.update(_parse(yaml.safe_load(Path(extra).read_text())))
    return roles


def needs_approval(roles: dict[str, Role], role: str, asked: bool = False) -> bool:
    """The one rule: a step waits for its own approval when its plan asks for one or its role
    is risky. Stored on the step when it is planned (Step.needs_approval)."""
    return asked or roles[role].risky


def binding(role: str, instructions: str) -> str:
    """What a step approval approves: this role doing these instructions. Changed instructions
    (a troubleshooter's retry) no longer match, and the step asks again."""
    return hashlib.sha256(f"{role}\n{instructions}".encode()).hexdigest()
