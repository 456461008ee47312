"""Whether Slack says a user is a workspace admin or owner (`users.info`), cached briefly."""
from __future__ import annotations

import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from swarm.contract import Principal

log = logging.getLogger(__name__)
ADMIN_TTL_S = 60.0  # a demoted admin keeps their rights this long at most


class WorkspaceAdmins:
    def __init__(self, ttl_s: float = ADMIN_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._seen: dict[tuple[str, str], tuple[bool, float]] = {}

    async def is_admin(self, client: AsyncWebClient, team_id: str, user: str) -> bool:
        now = time.monotonic()
        if (hit := self._seen.get((team_id, user))) is not None and hit[1] > now:
            return hit[0]
        try:
            answer = await client.users_info(user=user)
        except SlackApiError as exc:  # not known to be an admin: the policy decides without
            log.warning("slack.users_info_failed user=%s status=%s", user,
                        exc.response.status_code)
            return False
        info = answer.get("user") or {}
        admin = bool(info.get("is_admin") or info.get("is_owner")
                     or info.get("is_primary_owner"))
        self._seen[(team_id, user)] = (admin, now + self.ttl_s)
        return admin

    async def principal(self, client: AsyncWebClient, team_id: str, user: str,
                        channel_id: str | None = None) -> Principal:
        """The user as Slack reports them; what that allows is the swarm's policy's call."""
        return Principal(user, team_id, "slack", await self.is_admin(client, team_id, user),
                         channel_id)
