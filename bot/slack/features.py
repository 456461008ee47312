"""What each workspace's Slack offers the bot: agent blocks and agent sessions are not everywhere
(a plan without them, an app not declared as an agent). A refusal is learnt once per workspace
and remembered for the life of the process; that workspace then gets today's behaviour."""
from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)

# feature -> the errors with which Slack says a workspace lacks it
AGENT_BLOCKS = "agent_blocks"  # the plan and task_card blocks
AGENT_SESSIONS = "agent_sessions"  # agents.sessions.setStatus, the native Stop button
LACKING = {AGENT_BLOCKS: frozenset({"invalid_blocks", "invalid_blocks_format"}),
           AGENT_SESSIONS: frozenset({"not_authorized", "not_allowed_token_type",
                                      "missing_scope", "unknown_method",
                                      "feature_not_enabled"})}


class WorkspaceFeatures:
    def __init__(self) -> None:
        self._lacking: set[tuple[str, str]] = set()  # (team id, feature)

    def offered(self, team_id: str, feature: str) -> bool:
        return (team_id, feature) not in self._lacking

    def lacks(self, team_id: str, feature: str, exc: Exception) -> bool:
        """True if `exc` is Slack saying the workspace lacks `feature`: then it is remembered
        and logged once, and the caller falls back."""
        if not isinstance(exc, SlackApiError):
            return False
        error = str(exc.response.get("error", ""))
        if error not in LACKING[feature]:
            return False
        if (team_id, feature) not in self._lacking:
            self._lacking.add((team_id, feature))
            log.warning("slack.feature_unavailable team=%s feature=%s error=%s", team_id, feature,
                     error)
        return True
