"""The deploy files, checked offline (no Docker engine runs here: the image is never built)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import build_parser
from swarm.config import Settings

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = ("web", "worker", "clock")


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict((name.strip(), command.strip()) for name, _, command in
                (line.partition(":") for line in lines if line.strip()))


def services() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text())["services"])


def test_compose_runs_the_procfiles_processes_beside_postgres_and_rabbitmq() -> None:
    procs, running = procfile(), services()
    assert set(running) == {"postgres", "rabbitmq", "migrate", *PROCESSES}
    assert set(procs) == {"release", *PROCESSES}
    assert {p: running[p]["command"] for p in PROCESSES} == {p: procs[p] for p in PROCESSES}
    assert running["migrate"]["command"] == procs["release"]  # tables first, then the rest
    assert running["migrate"]["restart"] == "no"
    for name in PROCESSES:
        after = running[name]["depends_on"]
        assert after["migrate"] == {"condition": "service_completed_successfully"}
        assert after["rabbitmq"] == {"condition": "service_healthy"}
        assert running[name]["build"] == "."


@pytest.mark.parametrize("name", ["release", *PROCESSES])
def test_each_procfile_command_is_one_threadswarm_accepts(name: str) -> None:
    program, *words = shlex.split(procfile()[name])
    assert program == "threadswarm"
    build_parser().parse_args(words)  # exits (fails the test) on a command it does not know


def test_the_processes_environment_is_read_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = services()["web"]["environment"]
    for name in list(env):
        monkeypatch.setenv(name, str(env[name]))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.url == "postgresql+psycopg://threadswarm:threadswarm@postgres:5432/threadswarm"
    assert settings.executor == "celery"
    assert settings.celery_broker_url == env["CELERY_BROKER_URL"]
    assert env["CELERY_BROKER_URL"].startswith("amqp://") and "@rabbitmq:5672" in \
        env["CELERY_BROKER_URL"]


def test_the_image_installs_the_lock_with_cpu_torch_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    steps = [s for s in re.sub(r"\\\n", " ", dockerfile).splitlines()
             if s.strip() and not s.lstrip().startswith("#")]
    assert steps[0] == "FROM python:3.11-slim"
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^torch==[\d.]+\+cpu$", lock, re.M), "the lock pins the CPU build"
    installs = [s for s in steps if "pip install" in s]
    assert any("--index-url https://download.pytorch.org/whl/cpu" in s
               and "grep '^torch==' requirements.lock" in s and "--no-deps" in s
               for s in installs), "torch, as the lock pins it, from PyTorch's CPU index"
    assert any("pip install -r requirements.lock" in s for s in installs)
    assert any("pip install --no-deps --no-build-isolation ." in s for s in installs)
    users = [s.split()[1] for s in steps if s.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the processes do not run as root"
    last_run_as_root = max(i for i, s in enumerate(steps) if s.startswith("RUN "))
    assert steps.index(f"USER {users[-1]}") > last_run_as_root
    assert steps[-1] == 'CMD ["threadswarm", "serve"]'
