"""Slack transports and installs: Socket Mode, OAuth into more workspaces, /healthz."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

import bot.slack
from bot.slack.install import ThreadedInstallationStore
from bot.slack.settings import BOT_SCOPES, SlackSettings
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_bot import start_bot

APP_TOKEN = "xapp-1-A0APP-1-0123456789abcdef"


def plan_posted(api: FakeSlackAPI) -> bool:
    return any(b["type"] == "actions" for c in api.posted("*Plan v1")
               for b in c.params.get("blocks", []))


async def test_socket_mode_acks_each_envelope_and_answers_through_the_web_api(
        tmp_path: Any, sqlite_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, sqlite_url, api, signing_secret=None, app_token=APP_TOKEN)
    try:
        opened = await api.wait_for(lambda: api.to("apps.connections.open"), what="connect")
        assert opened[0].token == APP_TOKEN
        event = bot.events.mention_event("launch our SaaS in Japan")
        await api.socket_send({"envelope_id": "env-1", "type": "events_api",
                               "accepts_response_payload": False, "retry_attempt": 0,
                               "retry_reason": "", "payload": bot.events.callback(event)})
        await api.wait_for(lambda: {"envelope_id": "env-1"} in api.socket_received,
                           what="the ack envelope")
        await api.wait_for(lambda: plan_posted(api), what="the plan")
        assert [c.params["name"] for c in api.to("reactions.add")] == ["eyes"]
        assert api.posted("On it")[0].params["thread_ts"] == event["ts"]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{bot.url}/slack/events", data="{}") as resp:
                assert resp.status == 404, "in Socket Mode no event comes over HTTP"
            async with http.get(f"{bot.url}/healthz") as resp:
                assert await resp.json() == {"ok": True, "database": "ok",
                                             "slack": {"ok": True, "mode": "socket"}}
    finally:
        await bot.close()


async def test_oauth_installs_another_workspace_whose_events_use_its_own_token(
        tmp_path: Any, db_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, db_url, api, bot_token=None, client_id="1234.5678",
                          client_secret="oauth-client-secret-value")
    api.installs["code-other"] = "T0OTHER"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{bot.url}/slack/install") as resp:
                assert resp.status == 200
                state = resp.cookies["slack-app-oauth-state"].value
                page = await resp.text()
            assert f"state={state}" in page and "client_id=1234.5678" in page
            async with http.get(f"{bot.url}/slack/oauth_redirect",
                                params={"code": "code-other", "state": state},
                                headers={"Cookie": f"slack-app-oauth-state={state}"}) as resp:
                assert resp.status == 200
            async with http.get(f"{bot.url}/slack/oauth_redirect",
                                params={"code": "code-other", "state": state},
                                headers={"Cookie": f"slack-app-oauth-state={state}"}) as resp:
                assert resp.status != 200, "a state is good for one install only"
        assert len(api.to("oauth.v2.access")) == 1

        bot.events.team_id = "T0OTHER"
        delivery, _ = await bot.events.event(bot.events.mention_event("launch in Japan"))
        assert delivery.status == 200
        await api.wait_for(lambda: plan_posted(api), what="the plan")
        answered = [c for c in api.calls if c.method in ("chat.postMessage", "reactions.add")]
        assert answered and {c.token for c in answered} == {"xoxb-code-other"}
        assert [v.thread.team_id for v in bot.runtime.swarm.objectives()] == ["T0OTHER"]

        bot.events.team_id = "T0NEVER"  # never installed: nothing starts
        await bot.events.event(bot.events.mention_event("launch in Japan"))
        bot.events.team_id = "T0OTHER"  # uninstalled: its tokens go, and nothing starts
        await bot.events.event({"type": "app_uninstalled", "event_ts": "0"})
        store = bot.edge.app.installation_store
        assert isinstance(store, ThreadedInstallationStore)
        await api.wait_for(lambda: store.store.find_bot(enterprise_id=None,
                                                        team_id="T0OTHER") is None,
                           what="the installation gone")
        await bot.events.event(bot.events.mention_event("launch in Japan again"))
        await bot.runtime.settle()
        assert len(bot.runtime.swarm.objectives()) == 1
    finally:
        await bot.close()


async def test_healthz_answers_while_serving(tmp_path: Any, sqlite_url: str,
                                            api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, sqlite_url, api)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{bot.url}/healthz") as resp:
                assert resp.status == 200
                assert await resp.json() == {"ok": True, "database": "ok",
                                             "slack": {"ok": True, "mode": "http"}}
    finally:
        await bot.close()


def test_the_manifest_asks_for_what_the_bot_uses() -> None:
    manifest = yaml.safe_load((Path(bot.slack.__file__).parent / "manifest.yml").read_text())
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == sorted(BOT_SCOPES)
    settings = manifest["settings"]
    assert {"app_mention", "message.channels", "reaction_added", "agent_session_stopped"} <= \
        set(settings["event_subscriptions"]["bot_events"])
    assert settings["interactivity"]["is_enabled"] is True
    assert "socket_mode_enabled" in settings
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/swarm"]
    assert manifest["oauth_config"]["redirect_urls"][0].endswith(SlackSettings().redirect_uri_path)


def test_settings_say_what_is_missing_and_empty_variables_mean_unset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOT_TOKEN", "SIGNING_SECRET", "APP_TOKEN", "CLIENT_ID", "CLIENT_SECRET"):
        monkeypatch.setenv(f"SLACK_{name}", "")
    empty = SlackSettings(_env_file=None)  # type: ignore[call-arg]
    assert not empty.socket_mode and not empty.oauth
    assert [p.split(" (")[0] for p in empty.problems()] == [
        "Set SLACK_BOT_TOKEN", "Set SLACK_SIGNING_SECRET"]
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1-2-abcdefghijklmnop")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api")
    socket = SlackSettings(_env_file=None)  # type: ignore[call-arg]
    assert socket.socket_mode and socket.problems() == []
    assert socket.base_url == "http://127.0.0.1:9/api/"
    assert APP_TOKEN not in repr(socket), "secrets are masked in a repr (and so in logs)"
