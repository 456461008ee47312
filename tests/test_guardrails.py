"""Secrets never leave the process; states move only along allowed transitions."""
from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import select

from swarm.redact import MASK, RedactingFilter, redact
from swarm.services.objectives import Swarm
from swarm.states import IllegalTransition, ObjectiveState, StepState, check_transition
from swarm.store.models import AuditEntry, OutboxEvent
from tests.scenarios import run_goal

SECRETS = ["sk-proj-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-1234567890-abcdefghijkl",
           "ghp_0123456789abcdefghijABCDEFGHIJ", "password=hunter2hunter2"]


@pytest.mark.parametrize("secret", SECRETS)
def test_known_secret_shapes_are_redacted(secret: str) -> None:
    cleaned = redact(f"use {secret} please")
    assert secret not in cleaned and MASK in cleaned and cleaned.startswith("use ")


def test_secret_values_from_the_environment_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_TOKEN", "plain-looking-value-42")
    assert redact("token is plain-looking-value-42") == f"token is {MASK}"


async def test_a_secret_in_a_goal_reaches_no_chat_event_and_no_audit_entry(
        swarm: Swarm) -> None:
    view = await run_goal(swarm, f"Rotate the key {SECRETS[0]} for our staging app")
    with swarm.db.read() as s:
        payloads = json.dumps([r.payload for r in s.scalars(select(OutboxEvent))])
        audit = json.dumps([e.detail for e in s.scalars(select(AuditEntry))])
    assert view.state == "finished"
    assert SECRETS[0] not in payloads and SECRETS[0] not in audit
    assert MASK in payloads and MASK in audit


def test_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("threadswarm.test")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO):
        logger.info("calling with key=%s", SECRETS[1])
    assert SECRETS[1] not in caplog.text and MASK in caplog.text


def test_state_machines_refuse_illegal_transitions() -> None:
    check_transition(ObjectiveState.AWAITING_APPROVAL, ObjectiveState.RUNNING)
    check_transition(StepState.RUNNING, StepState.READY)  # a crashed step runs again
    with pytest.raises(IllegalTransition):
        check_transition(StepState.FINISHED, StepState.RUNNING)  # finished never runs twice
    with pytest.raises(IllegalTransition):
        check_transition(ObjectiveState.CANCELLED, ObjectiveState.RUNNING)
