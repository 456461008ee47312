"""GET /healthz: 200 when the database, the broker and the platforms answer; else 503 naming it."""
from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_bot import start_bot

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"  # the one the tests' machine runs
NOWHERE = "amqp://guest:guest@127.0.0.1:9//"  # nothing listens on the discard port


async def healthz(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize(("broker", "status", "shown"), [
    (RABBITMQ, 200, "ok"), (NOWHERE, 503, "unreachable")], ids=["reachable", "unreachable"])
async def test_healthz_checks_the_broker_when_steps_run_on_celery(
        tmp_path: Any, sqlite_url: str, api: FakeSlackAPI, broker: str, status: int,
        shown: str) -> None:
    bot = await start_bot(tmp_path, sqlite_url, api, swarm_settings={
        "executor": "celery", "celery_broker_url": broker})
    try:
        assert await healthz(bot.url) == (status, {
            "ok": status == 200, "database": "ok", "broker": shown,
            "slack": {"ok": True, "mode": "http"}})
    finally:
        await bot.close()


async def test_healthz_has_no_broker_to_check_in_process(
        tmp_path: Any, sqlite_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, sqlite_url, api)
    try:
        assert await healthz(bot.url) == (200, {"ok": True, "database": "ok",
                                                "slack": {"ok": True, "mode": "http"}})
    finally:
        await bot.close()
