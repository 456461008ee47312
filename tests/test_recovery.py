"""Self-healing: a step that fails after its retries goes to the troubleshooter, within bounds."""
from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from swarm.agents.roles import load_roles
from swarm.agents.troubleshooter import TroubleshootDecision, validate_decision
from swarm.llm.faults import FaultPlan, FaultSpecError
from swarm.services.objectives import Swarm
from swarm.store.models import AuditEntry, Intervention, LLMCall, OutboxEvent, Step
from tests.fakes.openai_server import FakeOpenAI
from tests.scenarios import THREAD, approve_all, outbox_kinds, run_goal
from tests.test_spend import over_fake

GOAL = "Launch a localized campaign for our SaaS in Japan"


def interventions(swarm: Swarm, objective_id: int) -> list[tuple[str, str]]:
    with swarm.db.read() as s:
        rows = s.execute(select(Step.key, Intervention.action)
                         .join(Step, Step.id == Intervention.step_id)
                         .where(Intervention.objective_id == objective_id)
                         .order_by(Intervention.id))
        return [(k, a) for k, a in rows]


def troubleshot_events(swarm: Swarm, objective_id: int) -> list[dict]:
    with swarm.db.read() as s:
        return [e.payload for e in s.scalars(select(OutboxEvent).where(
            OutboxEvent.objective_id == objective_id, OutboxEvent.kind == "StepTroubleshot")
            .order_by(OutboxEvent.id))]


async def test_a_step_the_model_keeps_failing_is_retried_then_replanned_by_the_troubleshooter(
        make_swarm: Callable[..., Swarm], openai_server: FakeOpenAI) -> None:
    # every worker request for the draft answers 500, however often it is retried
    openai_server.fail_when("STEP: Draft the deliverable", "TASK: Produce the step's output")
    swarm = make_swarm(**over_fake(openai_server, llm_retries=1))
    view = await run_goal(swarm, GOAL)

    assert view.state == "finished"
    assert interventions(swarm, view.id) == [("s3", "retry"), ("s3", "replan")]
    # the retry was applied: the worker was asked again, with the troubleshooter's instructions
    drafts = [r for r in openai_server.requests() if "STEP: Draft the deliverable" in r.text
              and "TASK: Produce" in r.text]
    assert all(r.status == 500 for r in drafts)
    assert any("no TODO or placeholder may remain" in r.text for r in drafts)
    # the replan was applied: s3 replaced by s3.1 -> s3.2, and its dependents wait for s3.2
    steps = {st.key: st for st in view.steps}
    assert [st.key for st in view.replaced] == ["s3"] and view.replaced[0].state == "replaced"
    assert steps["s3.1"].depends_on == ["s1", "s2"] and steps["s3.2"].depends_on == ["s3.1"]
    assert steps["s4"].depends_on == ["s3.2"] and steps["s5"].depends_on == ["s3.2"]
    assert all(st.state == "finished" for st in view.steps)
    assert "Complete — Draft the deliverable" in (steps["s4"].output or "")
    # each decision was posted in the thread and audited
    events = troubleshot_events(swarm, view.id)
    assert [(e["action"], e["intervention"]) for e in events] == [("retry", 1), ("replan", 2)]
    assert "InternalServerError (500)" in events[0]["error"]
    with swarm.db.read() as s:
        audited = s.scalars(select(AuditEntry.detail).where(
            AuditEntry.action == "step.troubleshot")).all()
    assert [a["decision"] for a in audited] == ["retry", "replan"]


async def test_the_troubleshooter_asks_the_humans_and_their_answer_unblocks_the_step(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm()
    view = await run_goal(swarm, GOAL + " [reject-always] [troubleshoot:ask]")
    steps = {st.key: st for st in view.steps}
    assert view.state == "running" and steps["s3"].state == "waiting_human"
    [question] = swarm.open_questions(view.id)
    assert "Draft the deliverable" in question.text and "keeps failing" in question.text
    assert outbox_kinds(swarm, view.id)[-2:] == ["StepTroubleshot", "QuestionAsked"]

    assert await swarm.reply(THREAD, "alice", "Lead with the free trial, in Japanese.")
    view = await approve_all(swarm, view.id)
    steps = {st.key: st for st in view.steps}
    assert view.state == "finished"
    assert "Lead with the free trial" in (steps["s3"].output or "")
    assert interventions(swarm, view.id) == [("s3", "ask_humans")]


@pytest.mark.parametrize(("limits", "left"), [
    ({"max_troubleshoots_per_step": 2}, "2 of 2 for this step"),
    ({"max_troubleshoots_per_objective": 1}, "1 of 1 for this objective"),
])
async def test_troubleshooting_is_bounded_and_the_objective_ends_failed(
        make_swarm: Callable[..., Swarm], limits: dict[str, int], left: str) -> None:
    swarm = make_swarm(**limits)
    view = await run_goal(swarm, GOAL + " [reject-always] [troubleshoot:retry]")
    steps = {st.key: st for st in view.steps}

    assert view.state == "failed"
    assert steps["s3"].state == "failed" and f"no troubleshooting left: {left} used" in (
        steps["s3"].error or "")
    assert {steps["s4"].state, steps["s5"].state} == {"skipped"}
    n = int(left.split()[0])
    assert interventions(swarm, view.id) == [("s3", "retry")] * n
    assert steps["s3"].attempts == 3 * (n + 1)  # each retry got the critic's full revisions


async def test_injected_faults_are_recovered_live_and_the_objective_ends_in_a_named_state(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(offline_faults="429:0.05,500:0.15,bad_json:0.3", offline_fault_seed=3)
    view = await run_goal(swarm, GOAL)

    assert view.state in ("finished", "failed")
    with swarm.db.read() as s:
        failed = s.scalars(select(LLMCall.error).where(LLMCall.objective_id == view.id,
                                                       LLMCall.ok.is_(False))).all()
    assert failed and set(failed) <= {"RateLimitError (429)", "InternalServerError (500)"}
    kinds = outbox_kinds(swarm, view.id)
    assert "CallRetried" in kinds and kinds[-1] == "ObjectiveFinished"
    with swarm.db.read() as s:
        actions = {p["action"] for p in s.scalars(select(OutboxEvent.payload).where(
            OutboxEvent.objective_id == view.id, OutboxEvent.kind == "CallRetried"))}
    assert {"retry", "re-ask"} <= actions


def test_a_fault_spec_that_cannot_be_read_says_how_to_write_it() -> None:
    assert FaultPlan.parse("429:0.2,timeout:0.05").describe() == "429 20%, timeout 5%"
    with pytest.raises(FaultSpecError, match="kind:rate pairs"):
        FaultPlan.parse("429:lots")
    with pytest.raises(FaultSpecError, match="add up to more than 1"):
        FaultPlan.parse("429:0.7,500:0.7")


def test_an_invalid_troubleshooter_decision_gets_errors_to_repair() -> None:
    roles = load_roles()
    retry = TroubleshootDecision(action="retry", reason="r", instructions="Do it.", steps=[],
                                 question="")
    assert validate_decision(retry, roles, 4, "Do it.") == [
        "instructions: a retry needs instructions that differ from the ones that failed"]
    replan = TroubleshootDecision.model_validate({
        "action": "replan", "reason": "r", "instructions": "", "question": "",
        "steps": [{"key": "a", "title": "A", "role": "troubleshooter", "instructions": "x",
                   "depends_on": ["b"]}]})
    errors = validate_decision(replan, roles, 4, "Do it.")
    assert any("unknown role 'troubleshooter'" in e for e in errors)
    assert any("unknown step 'b'" in e for e in errors)
    ask = TroubleshootDecision(action="ask_humans", reason="r", instructions="", steps=[],
                               question=" ")
    assert validate_decision(ask, roles, 4, "x") == ["question: ask_humans needs the question "
                                                     "to ask"]
