"""The thread's agent session in Slack (agents.sessions.setStatus): processing while steps run,
suspended while a human is waited for, closed when the objective ends. Slack shows its Stop
button while the session is processing; a click arrives as agent_session_stopped (listeners)."""
from __future__ import annotations

import logging
from collections import OrderedDict

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.features import AGENT_SESSIONS, WorkspaceFeatures
from bot.slack.install import BotTokens
from bot.slack.text import is_user_id
from swarm.states import TERMINAL_OBJECTIVE, ObjectiveState, StepState
from swarm.store.views import ObjectiveView

log = logging.getLogger(__name__)
PROCESSING, SUSPENDED, CLOSED = "processing", "suspended", "closed"  # of Slack's enum
TITLE_CHARS = 200  # Slack's limit
REMEMBERED = 10_000  # threads whose last status is kept, so an unchanged one is not sent again
WAITING_STEP = frozenset({StepState.AWAITING_APPROVAL, StepState.WAITING_HUMAN})


def session_status(view: ObjectiveView) -> str:
    if view.state in TERMINAL_OBJECTIVE:
        return CLOSED
    if view.state in (ObjectiveState.AWAITING_APPROVAL, ObjectiveState.PAUSED):
        return SUSPENDED
    states = {st.state for st in view.steps}
    if StepState.RUNNING not in states and states & WAITING_STEP:
        return SUSPENDED  # nothing runs until someone answers or approves
    return PROCESSING  # planning, or steps running or about to


class AgentSessions:
    def __init__(self, client: AsyncWebClient, tokens: BotTokens,
                 features: WorkspaceFeatures) -> None:
        self.client, self.tokens, self.features = client, tokens, features
        self._shown: OrderedDict[str, str] = OrderedDict()  # thread key -> status set

    async def show(self, view: ObjectiveView) -> None:
        """Set the thread's session status when it changed. Best effort: a refusal never holds
        back the thread's messages; a workspace without agent sessions is asked once."""
        thread, status = view.thread, session_status(view)
        if not thread.thread_id:  # started by a schedule, in no thread of a human's: none
            return
        if self._shown.get(thread.key) == status or \
                not self.features.offered(thread.team_id, AGENT_SESSIONS):
            return
        try:
            await self.client.agents_sessions_setStatus(
                token=await self.tokens(thread.team_id), channel_id=thread.channel_id,
                thread_ts=thread.thread_id, status=status,
                title=f"#{view.id} {view.goal}"[:TITLE_CHARS],
                initiator_user_id=view.requester if is_user_id(view.requester) else None)
        except Exception as exc:
            if not self.features.lacks(thread.team_id, AGENT_SESSIONS, exc):
                log.warning("slack.session_status_failed objective=%s status=%s error=%s",
                            view.id, status, type(exc).__name__)
            return  # not remembered: the next event of the objective tries again
        self._shown[thread.key] = status
        self._shown.move_to_end(thread.key)
        if len(self._shown) > REMEMBERED:
            self._shown.popitem(last=False)
