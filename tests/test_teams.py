"""Issue 18: a step may be a team of its own (a child objective) that reports one summary."""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from swarm.llm.budget import objective_key
from swarm.services.objectives import Swarm
from swarm.states import ObjectiveState
from swarm.store.models import (
    Approval,
    BudgetCeiling,
    Objective,
    OutboxEvent,
    Step,
    StepRun,
)
from swarm.store.spend import objective_spend
from swarm.store.views import ObjectiveView
from tests.fakes.openai_server import FakeOpenAI, Received
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_bot import start_bot
from tests.scenarios import THREAD, approve_all, outbox_kinds, run_goal
from tests.test_cli import _run as run_cli
from tests.test_slack import click, mention, progress_edits, with_buttons
from tests.test_spend import over_fake

GOAL = "Launch a localized campaign for our SaaS in Japan [team]"


def team_of(view: ObjectiveView, key: str = "s3") -> ObjectiveView:
    step = next(st for st in view.steps if st.key == key)
    assert step.team
    return view.teams[step.id]


def worker_prompt(server: FakeOpenAI, goal: str, title: str) -> list[Received]:
    """The worker requests of one step of the objective with `goal` (critics excluded)."""
    return [r for r in server.requests() if r.schema is None
            and f"OBJECTIVE: {goal}\n" in r.text and f"STEP: {title}\n" in r.text]


async def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def approved_and_run(swarm: Swarm) -> ObjectiveView:
    """GOAL started and its plan approved: it runs until it rests (its team, too)."""
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    assert (await swarm.decide(swarm.pending_approvals(started.objective_id)[0].id,
                               "alice", True)).ok
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert view is not None
    return view


async def test_a_team_step_runs_as_a_child_objective_and_its_reviewed_summary_is_its_output(
        make_swarm: Callable[..., Swarm], openai_server: FakeOpenAI) -> None:
    swarm = make_swarm(**over_fake(openai_server))
    view = await run_goal(swarm, GOAL)
    assert view.state == "finished", view.reason
    team = team_of(view)
    s1, s2, s3, s4, _ = view.steps
    # the team: its own objective of five steps in the same thread, planned for the step's
    # instructions, and its risky step asked (and was approved) in that thread too
    assert (team.parent_id, team.depth, team.thread, team.state) == (view.id, 1, THREAD,
                                                                      "finished")
    assert team.goal.startswith("Write the main deliverable") and len(team.steps) == 5
    with swarm.db.read() as s:
        asked = s.scalars(select(OutboxEvent.thread_key).where(
            OutboxEvent.objective_id == team.id, OutboxEvent.kind == "ApprovalRequested")).all()
        [step_approval] = s.scalars(select(Approval).where(Approval.objective_id == team.id))
        runs = list(s.scalars(select(StepRun).where(StepRun.step_id == s3.id)
                              .order_by(StepRun.id)))
    assert asked == [THREAD.key] and step_approval.kind == "step"
    assert step_approval.state == "approved"
    # the team's manager planned with the parent's goal and the outputs the step builds on
    [planned] = [r for r in openai_server.requests() if r.schema == "PlanSpec"
                 and f"GOAL: {team.goal}" in r.text]
    assert view.goal in planned.text and s1.output in planned.text and s2.output in planned.text
    # the step's output is one summary written from the team's results, reviewed by the critic
    summing = [r for r in worker_prompt(openai_server, view.goal, s3.title)
               if "INSTRUCTIONS: Your team" in r.text]
    assert summing and all(st.output and st.output in summing[-1].text for st in team.steps)
    assert [r.state for r in runs] == ["waiting", "rejected", "accepted"]  # delegated, revised
    assert runs[-1].approved and runs[-1].output == s3.output
    assert any(r.schema == "CriticVerdict" and s3.output in r.text
               for r in openai_server.requests())
    # the parent's later step got the summary, and none of the team's own outputs
    [review] = worker_prompt(openai_server, view.goal, s4.title)
    assert s3.output in review.text
    assert not [st.key for st in team.steps if st.output and st.output in review.text]
    # the thread got the team's end as one line, and the results once, from the parent
    with swarm.db.read() as s:
        ends = dict(s.execute(select(OutboxEvent.objective_id, OutboxEvent.payload).where(
            OutboxEvent.kind == "ObjectiveFinished")).all())
    assert ends[team.id]["results"] == [] and len(ends[view.id]["results"]) == 5
    assert "TeamStarted" in outbox_kinds(swarm, view.id)


async def test_cancelling_the_parent_cancels_its_team_and_closes_the_teams_approvals(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm()
    view = await approved_and_run(swarm)  # the team runs until its risky step asks
    team = team_of(view)
    [asked] = swarm.pending_approvals(view.id)  # the team's, shown with the parent's
    assert asked.objective_id == team.id and asked.kind == "step"

    assert not (await swarm.cancel(team.id, "mallory")).ok  # the requester decides, as ever
    result = await swarm.cancel(view.id, "alice")
    assert result.ok, result.message
    await swarm.join()
    view = swarm.view(view.id)
    assert view is not None and view.state == "cancelled"
    team = team_of(view)
    assert team.state == "cancelled" and "Cancelled with objective" in (team.reason or "")
    assert {st.state for st in team.steps if st.state != "finished"} == {"cancelled"}
    assert not swarm.pending_approvals(view.id)
    assert not (await swarm.decide(asked.id, "alice", True)).ok
    with swarm.db.read() as s:
        assert not s.scalars(select(StepRun.id).where(StepRun.state == "running")).all()


async def test_cancelling_a_team_fails_its_step_and_the_parent_goes_on_without_it(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm()
    view = await approved_and_run(swarm)
    assert (await swarm.cancel(team_of(view).id, "alice")).ok
    view = await approve_all(swarm, view.id)
    assert view.state == "failed"
    states = {st.key: (st.state, st.error or "") for st in view.steps}
    assert states["s3"][0] == "failed" and f"its team #{team_of(view).id} cancelled" in \
        states["s3"][1]
    assert states["s4"][0] == states["s5"][0] == "skipped"


async def test_pausing_the_parent_pauses_its_team_and_resuming_it_resumes_the_team(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(offline_latency_ms=60)
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    assert (await swarm.decide(swarm.pending_approvals(started.objective_id)[0].id,
                               "alice", True)).ok
    oid = started.objective_id

    def team_running() -> bool:
        view = swarm.view(oid)
        return view is not None and any(t.state == "running" and t.steps
                                        for t in view.teams.values())

    await wait_until(team_running)
    assert (await swarm.pause(oid, "alice")).ok
    await swarm.join()
    view = swarm.view(oid)
    assert view is not None and view.state == "paused"
    team = team_of(view)
    assert team.state == "paused" and not [st for st in team.steps if st.state == "running"]
    assert (await swarm.resume(oid, "alice")).ok
    view = await approve_all(swarm, oid)
    assert view.state == "finished" and team_of(view).state == "finished"


async def test_a_team_is_stopped_at_its_share_of_the_parents_budget(
        make_swarm: Callable[..., Swarm], openai_server: FakeOpenAI) -> None:
    ceiling = 5000
    swarm = make_swarm(**over_fake(openai_server, objective_budget_tokens=ceiling,
                                   llm_max_tokens=300, team_budget_share=0.5))
    view = await approved_and_run(swarm)
    team = team_of(view)
    with swarm.db.read() as s:
        share = s.scalar(select(BudgetCeiling.tokens).where(
            BudgetCeiling.key == objective_key(team.id)))
        parent_before = s.scalar(select(Step.started_at).where(Step.id == view.steps[2].id))
        spent = objective_spend(s, team.id).tokens
    assert parent_before is not None and share is not None
    assert share <= (ceiling - view.tokens) / 2 + 1  # half of what the parent had left
    # the team paused at its own share, and asks (in the thread) to raise it; its parent waits
    assert team.state == "paused" and "budget" in (team.reason or "")
    assert spent <= share
    assert view.state == "running" and view.steps[2].state == "waiting_team"
    [raise_it] = swarm.pending_approvals(view.id)
    assert raise_it.kind == "budget" and raise_it.objective_id == team.id
    assert f"objective #{team.id}" in raise_it.title
    view = await approve_all(swarm, view.id)  # raised as asked: the tree finishes
    assert view.state == "finished"
    with swarm.db.read() as s:
        tree = objective_spend(s, [view.id, team.id]).tokens
        raised = {key: tokens for key, tokens in s.execute(
            select(BudgetCeiling.key, BudgetCeiling.tokens))}
    assert tree <= raised.get(objective_key(view.id), ceiling)  # the tree kept to its ceiling


async def test_teams_nested_deeper_than_the_limit_are_refused_with_a_clear_answer(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(max_depth=0)
    started = await swarm.start_objective(GOAL, THREAD, "alice", "evt-1")
    await swarm.join()
    view = swarm.view(started.objective_id)
    assert view is not None and view.state == "failed"
    assert "step s3: cannot be a team: teams nest at most 0 deep (THREADSWARM_MAX_DEPTH)" in \
        (view.reason or "")
    with swarm.db.read() as s:
        said = s.scalars(select(OutboxEvent.payload).where(OutboxEvent.kind == "Notice")).all()
    assert any("THREADSWARM_MAX_DEPTH" in p["text"] for p in said)


async def test_a_team_past_the_trees_size_limit_is_refused_and_its_step_fails_clearly(
        make_swarm: Callable[..., Swarm]) -> None:
    swarm = make_swarm(max_tree_steps=7)
    view = await run_goal(swarm, GOAL)
    assert view.state == "failed"
    team = team_of(view)
    assert team.state == "failed" and not team.steps
    assert "this team may plan at most 2 steps, not 5" in (team.reason or "")
    assert "THREADSWARM_MAX_TREE_STEPS" in (team.reason or "")
    s3 = view.steps[2]
    assert s3.state == "failed" and f"its team #{team.id} failed" in (s3.error or "")


async def test_a_step_starts_one_team_though_two_swarms_drive_it(
        make_swarm: Callable[..., Swarm]) -> None:
    one, other = make_swarm(), make_swarm()
    started = await one.start_objective(GOAL, THREAD, "alice", "evt-1")
    await one.join()
    assert (await one.decide(one.pending_approvals(started.objective_id)[0].id, "alice",
                             True)).ok
    other.engine.poke(started.objective_id)  # both drive it, as two processes would
    await asyncio.gather(one.join(), other.join())
    while pending := one.pending_approvals(started.objective_id):
        for approval in pending:
            await one.decide(approval.id, "alice", True)
        other.engine.poke(approval.objective_id)
        await asyncio.gather(one.join(), other.join())
    view = one.view(started.objective_id)
    assert view is not None and view.state == "finished"
    with one.db.read() as s:
        teams = s.scalars(select(Objective.id).where(Objective.parent_id == view.id)).all()
        assert len(teams) == 1
        with pytest.raises(IntegrityError):  # and the database itself refuses a second
            with one.db.tx() as w:
                w.add(Objective(goal="again", platform="console", team_id="team-a",
                                channel_id="general", thread_id="t-1", requester="alice",
                                state=ObjectiveState.PLANNING, parent_id=view.id,
                                parent_step_id=view.steps[2].id))


# -- the tree in the progress message -------------------------------------------------------
def test_the_console_shows_the_team_as_one_line_of_its_tree_and_status_expands_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(tmp_path, monkeypatch, capsys, "run", "--yes", GOAL)
    assert code == 0, text
    assert "⑂ team #2 takes on 'Draft the deliverable'" in text
    # the tree's bar: the team's own line under it, with its counts
    assert re.search(r"└ s3 team #2 \((running|finished)\) [■▶□]{5} 5/5 done", text)
    assert "approval needed: Run step 'Prepare the rollout'" in text  # the team's, asked here
    assert "Objective #2 finished" in text and "Objective #1 finished" in text
    code, text = run_cli(tmp_path, monkeypatch, capsys, "status", "1")
    assert "s3/s5" in text and "#2 Write the main deliverable" in text


async def test_slack_shows_the_team_in_the_objectives_progress_message_and_asks_in_its_thread(
        tmp_path: Path, sqlite_url: str, api: FakeSlackAPI) -> None:
    bot = await start_bot(tmp_path, sqlite_url, api)
    try:
        plan, mention_ts = await mention(bot, api, GOAL)
        assert ":busts_in_silhouette: a team of its own" in plan.text()
        await click(bot, plan)
        asked = await api.wait_for(lambda: with_buttons(api, "Approval needed"),
                                   what="the team's step approval")
        assert asked[-1].params["thread_ts"] == mention_ts
        # while the team waits for it, the objective's progress message shows the team's line
        await api.wait_for(lambda: [c for c in api.to("chat.update")
                                    if "team #2 running: 4/5 steps" in c.text()],
                           what="the team's line in the progress message")
        await click(bot, asked[-1])
        rollout = await api.wait_for(lambda: with_buttons(api, "Approval needed")[1:],
                                     what="the parent's own step approval")
        await click(bot, rollout[-1])
        await api.wait_for(lambda: api.posted("Objective #1 finished"), what="the results")
        edits = lambda: progress_edits(api)[1]  # noqa: E731  (one message for the whole tree)
        await api.wait_for(lambda: edits() and "team #2 finished: 5/5 steps" in edits()[-1].text()
                           and "5/5 steps done" in edits()[-1].text(), what="the tree's end")
        status = (await bot.events.command("status 1")).json()["text"]
        assert "team #2 finished · 5/5 steps" in status and "s5 finished" in status
        listed = (await bot.events.command("list")).json()["text"]
        assert "#1 finished" in listed and "#2" not in listed  # one line per tree
    finally:
        await bot.close()


async def test_discord_shows_the_team_in_the_objectives_progress_embed_and_asks_in_its_thread(
        tmp_path: Path, sqlite_url: str) -> None:
    from tests import test_discord as dc
    from tests.fakes.discord_bot import start_discord_bot
    from tests.fakes.discord_server import FakeDiscord

    fake = await FakeDiscord().start()
    bot = await start_discord_bot(tmp_path, sqlite_url, fake)
    try:
        plan, event = await dc.mention(fake, GOAL)
        assert "👥 a team of its own" in plan.body["embeds"][0]["description"]
        await dc.click(fake, plan)
        asked = await fake.wait_for(lambda: dc.with_buttons(fake, "Approval needed"),
                                    what="the team's step approval")
        assert asked[-1].path == f"/channels/{event['id']}/messages", "in the tree's thread"
        [progress] = fake.posted("steps done")  # one progress message for the whole tree

        def embeds() -> list[str]:
            return [c.body["embeds"][0]["description"] for c in fake.edits_of(
                progress.answer["id"]) if c.body.get("embeds")]
        # while the team waits for it, the objective's embed shows the team's line
        await fake.wait_for(lambda: [d for d in embeds() if "team #2 running: 4/5 steps" in d],
                            what="the team's line in the progress embed")
        await dc.click(fake, asked[-1])
        rollout = await fake.wait_for(lambda: dc.with_buttons(fake, "Approval needed")[1:],
                                      what="the parent's own step approval")
        await dc.click(fake, rollout[-1])
        await fake.wait_for(lambda: fake.posted("Objective #1 finished"), what="the results")

        def team_line() -> str:
            return next((ln for ln in embeds()[-1].splitlines() if "team #2" in ln), "") \
                if embeds() else ""
        # an edit may show the team finished before its step in the parent is (throttled edits
        # fold changes together): wait for the embed's last state, not the first that fits
        await fake.wait_for(lambda: "team #2 finished: 5/5 steps" in team_line()
                            and team_line().startswith("✅ `s3`"), what="the tree's end")
        assert "Objective #1" in fake.edits_of(progress.answer["id"])[-1].body["embeds"][0]["title"]
        assert fake.posted("steps done") == [progress], "no progress message of the team's own"
    finally:
        await bot.close()
        await fake.close()
