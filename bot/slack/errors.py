"""Which Slack Web API errors are permanent: the dispatcher dead-letters those at once."""
from __future__ import annotations

from slack_sdk.errors import SlackApiError

from bot.adapter import PermanentDeliveryError
from bot.slack.install import NotInstalled

# Refusals without a notice. The thread takes no post at all any more (the channel is gone or
# closed to the bot, or the workspace's token is), or the message edited in place (progress,
# an approval) is gone or frozen: every later event of the thread meets the same refusal, and
# a notice for each would flood the thread.
SILENT = frozenset({
    "channel_not_found", "is_archived", "not_in_channel", "restricted_action",
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
    "team_access_not_granted", "team_not_found", "org_login_required", "ekm_access_denied",
    "message_not_found", "cant_update_message", "edit_window_closed",
})
# This message can never be posted, but a short notice in the thread can say so.
MESSAGE_REFUSED = frozenset({
    "msg_too_long", "no_text", "invalid_blocks", "invalid_blocks_format", "too_many_attachments",
    "missing_scope", "invalid_arguments", "file_uploads_disabled",
})


def permanent(exc: Exception) -> PermanentDeliveryError | None:
    """The PermanentDeliveryError that `exc` amounts to, or None if a retry may succeed."""
    if isinstance(exc, NotInstalled):  # uninstalled from the workspace
        return PermanentDeliveryError("not_installed", notify=False)
    if not isinstance(exc, SlackApiError):
        return None
    error = str(exc.response.get("error", ""))
    if error in SILENT or error in MESSAGE_REFUSED:
        return PermanentDeliveryError(error, notify=error in MESSAGE_REFUSED)
    return None
