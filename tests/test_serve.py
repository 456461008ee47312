"""`threadswarm serve`: the configured edges from the registry, one HTTP server, /healthz."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from bot import cli
from tests.conftest import migrated
from tests.processes import cli as command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_with_no_chat_platform_configured_says_what_to_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    for name in list(os.environ):
        if name.startswith("SLACK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("THREADSWARM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("THREADSWARM_MEMORY_ENABLED", "false")
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve"])
    assert exited.value.code == 2  # first: the database has no tables, `migrate` makes them
    assert "has no tables yet: run `threadswarm migrate`" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        cli.main(["migrate"])
    assert exited.value.code == 0 and "tables created" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve"])
    assert exited.value.code == 2
    assert "No chat platform is configured: set SLACK_BOT_TOKEN" in capsys.readouterr().err


def test_serve_answers_healthz_for_its_edges_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update(THREADSWARM_DATA_DIR=str(tmp_path), THREADSWARM_MEMORY_ENABLED="false",
               PORT=str(port), SLACK_BOT_TOKEN="xoxb-1-serve-test-token",
               SLACK_SIGNING_SECRET="0" * 32, SLACK_API_URL="http://127.0.0.1:9/api/")
    migrated(f"sqlite:///{tmp_path / 'threadswarm.db'}").close()  # `threadswarm migrate`
    proc = subprocess.Popen(command("serve", "--host", "127.0.0.1"), env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body, deadline = None, time.monotonic() + 60
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert body == {"ok": True, "database": "ok", "slack": {"ok": True, "mode": "http"}}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]


@pytest.mark.parametrize("with_slack", [False, True], ids=["discord-only", "slack-and-discord"])
async def test_serve_connects_discord_from_its_token_alone_or_beside_slack(
        tmp_path: Path, with_slack: bool) -> None:
    from tests.fakes.discord_server import TOKEN, FakeDiscord

    fake = await FakeDiscord().start()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_"))}
    env.update(THREADSWARM_DATA_DIR=str(tmp_path), THREADSWARM_MEMORY_ENABLED="false",
               PORT=str(port), DISCORD_TOKEN=TOKEN, DISCORD_API_URL=fake.api_url)
    if with_slack:
        env.update(SLACK_BOT_TOKEN="xoxb-1-serve-test-token", SLACK_SIGNING_SECRET="0" * 32,
                   SLACK_API_URL="http://127.0.0.1:9/api/")
    migrated(f"sqlite:///{tmp_path / 'threadswarm.db'}").close()  # `threadswarm migrate`
    proc = subprocess.Popen(command("serve", "--host", "127.0.0.1"), env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body: dict | None = None  # type: ignore[type-arg]
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:  # 503 while the gateway connects
            while not (body and body["ok"]) and time.monotonic() < deadline \
                    and proc.poll() is None:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                        body = await r.json()
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        assert body is not None and body["ok"] is True
        assert body["discord"]["gateway"] == "connected"
        assert ("slack" in body) is with_slack
        assert fake.identifies == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
        await fake.close()
    assert proc.returncode == 0, err.decode()[-2000:]


def test_the_clock_role_runs_the_schedules_alone_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`serve --role clock` needs no chat platform and serves no HTTP: it keeps the jobs."""
    from sqlalchemy import create_engine, text

    from schedules.clock import JOBS_TABLE
    from tests.processes import wait_for

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DISCORD_"))}
    env.update(THREADSWARM_DATA_DIR=str(tmp_path), THREADSWARM_MEMORY_ENABLED="false",
               PORT=str(port), THREADSWARM_SCHEDULER_ENABLED="false")  # the role turns it on
    migrated(f"sqlite:///{tmp_path / 'threadswarm.db'}").close()  # `threadswarm migrate`
    proc = subprocess.Popen(command("serve", "--role", "clock"), env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    engine = create_engine(f"sqlite:///{tmp_path / 'threadswarm.db'}")
    try:
        wait_for(engine, lambda s: "recurring.policies" in s.scalars(
            text(f"select id from {JOBS_TABLE}")).all(), timeout=60, alive=proc)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        engine.dispose()
    assert proc.returncode == 0, err.decode()[-2000:]
