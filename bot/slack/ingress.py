"""The door of /slack/events: a request is checked before bolt sees it, and bolt's errors are
answered plainly. Slack retries a 5xx, and a traceback per hostile request floods the log."""
from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from aiohttp import web
from slack_bolt.error import BoltUnhandledRequestError
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier

log = logging.getLogger(__name__)


def refused(status: int, reason: str) -> web.Response:
    log.info("slack.request_refused status=%d reason=%s", status, reason)
    return web.Response(status=status, text=reason)


async def checked_request(request: web.Request,
                          verifier: SignatureVerifier) -> AsyncBoltRequest | web.Response:
    """The request for bolt, or the answer it gets instead: 400 for bytes that are not UTF-8,
    401 unless Slack signed it (checked first, so an unsigned body is never parsed), 400 if the
    signed body is no JSON object or form Slack would send."""
    try:  # Slack sends UTF-8, and signs text: other bytes are neither Slack's nor checkable
        raw = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        return refused(400, "the body is not UTF-8")
    stamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    # SignatureVerifier reads the stamp with int() and compares with compare_digest, which raise
    # on text that is not ASCII digits / ASCII: such headers are forged, not an error of ours.
    if not (stamp.isascii() and stamp.isdigit() and signature.isascii()):
        return refused(401, "invalid signature headers")
    if not verifier.is_valid(raw, stamp, signature):
        return refused(401, "invalid signature")
    try:
        bolt = AsyncBoltRequest(body=raw, query=request.query_string,
                                headers=request.headers)  # type: ignore[arg-type]
    except (ValueError, TypeError, AttributeError, KeyError, IndexError):
        return refused(400, "malformed body")
    if not isinstance(bolt.body, dict) or not well_formed(bolt.body):
        return refused(400, "not a payload Slack sends")
    return bolt


def _dicts(value: object, *, nonempty: bool = False) -> bool:
    return isinstance(value, list) and (bool(value) or not nonempty) \
        and all(isinstance(v, dict) for v in value)


def well_formed(body: dict[str, Any]) -> bool:
    """The parts of a payload that bolt indexes without looking (to route it, to build a
    listener's arguments) have the shape Slack gives them; the listeners check the rest."""
    if "event" in body:
        event = body["event"]
        if not isinstance(event, dict) or not isinstance(event.get("type", ""), str):
            return False
        for key in ("message", "previous_message", "item"):
            if key in event and not isinstance(event[key], dict | None):
                return False
    for key in ("team", "user", "channel", "enterprise", "view", "container", "message",
                "function_data", "workflow_step"):
        if key in body and not isinstance(body[key], dict | str | None):
            return False
    if "actions" in body and not _dicts(body["actions"], nonempty=True):
        return False
    if body.get("type") == "block_actions" and not all(
            isinstance(a.get("action_id"), str) for a in body.get("actions") or [{}]):
        return False
    if "authorizations" in body and not _dicts(body["authorizations"]):
        return False
    return all(isinstance(body.get(key, ""), str) for key in ("type", "team_id", "event_id",
                                                                 "command", "callback_id"))


async def on_error(error: Exception, body: Any,
                   response: BoltResponse | None) -> BoltResponse | None:
    """Bolt's error handler (app.error): one short line instead of a traceback with the payload.
    A request bolt cannot route keeps its 404; a listener that failed before its ack answers 400
    (a payload Slack would not send); after the ack Slack has its 200 already."""
    if isinstance(error, BoltUnhandledRequestError):
        kind = body.get("type") if isinstance(body, dict) else None
        log.info("slack.request_unhandled type=%s", kind if isinstance(kind, str) else "?")
        return None
    # where it failed, in one line: enough to find a bug, without a payload-laden traceback
    frames = traceback.extract_tb(error.__traceback__)
    at = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    log.warning("slack.listener_failed error=%s at=%s", type(error).__name__, at)
    return BoltResponse(status=400, body="") if response is not None else None
