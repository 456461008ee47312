"""The console commands as a user runs them: run, status, resume, audit verify."""
from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from bot import cli
from swarm.services.objectives import Swarm
from swarm.store.models import ThreadRef
from tests.conftest import make_settings, migrated
from tests.scenarios import run_goal

Capture = pytest.CaptureFixture[str]


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture,
         *args: str, stdin: str = "") -> tuple[int, str]:
    monkeypatch.setenv("THREADSWARM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("THREADSWARM_OFFLINE_LATENCY_MS", "5")
    monkeypatch.setenv("THREADSWARM_MEMORY_ENABLED", "false")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    monkeypatch.setattr(cli, "console", Console(width=160, force_terminal=False))
    with pytest.raises(SystemExit) as exited:
        cli.main(list(args))
    return int(exited.value.code or 0), capsys.readouterr().out


def test_run_with_yes_shows_plan_approvals_progress_and_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    code, text = _run(tmp_path, monkeypatch, capsys, "run", "--yes",
                      "Launch a localized campaign for our SaaS in Japan")
    assert code == 0
    assert "offline rehearsal model" in text
    assert "Plan v1" in text and "security_reviewer" in text
    assert "auto-approved (--yes): plan v1" in text
    assert "approval needed: Run step 'Prepare the rollout'" in text
    assert "critic sent back 'Draft the deliverable'" in text
    assert "5/5 done" in text
    assert "Objective #1 finished" in text

    code, text = _run(tmp_path, monkeypatch, capsys, "status")
    assert "#1 (finished) 5/5 steps" in text
    code, text = _run(tmp_path, monkeypatch, capsys, "status", "1")
    assert "Draft the deliverable" in text and "finished" in text
    code, text = _run(tmp_path, monkeypatch, capsys, "audit", "verify")
    assert code == 0 and text.startswith("Audit chain intact")


def test_answering_no_at_the_prompt_rejects_the_plan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    code, text = _run(tmp_path, monkeypatch, capsys, "run", "Write a press release", stdin="n\n")
    assert code == 1
    assert "Rejected by you." in text and "cancelled" in text


def test_no_answer_at_the_prompt_leaves_the_approval_open_for_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    code, text = _run(tmp_path, monkeypatch, capsys, "run", "Write a press release")
    assert code == 0
    assert "the approval stays open" in text and "awaiting_approval" in text
    code, text = _run(tmp_path, monkeypatch, capsys, "resume", "--yes")
    assert code == 0 and "Objective #1 finished" in text


def test_resume_shows_the_results_a_stop_left_in_the_outbox(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    async def run_to_the_end_without_delivering() -> str:  # killed before its dispatcher ran
        url = f"sqlite:///{tmp_path / 'threadswarm.db'}"
        db = migrated(url)
        swarm = Swarm(make_settings(tmp_path, url, offline_latency_ms=5.0), db)
        view = await run_goal(swarm, "Write a press release",
                              thread=ThreadRef("console", "local", "console", "t-1"))
        await swarm.shutdown()
        db.close()
        return view.state

    assert asyncio.run(run_to_the_end_without_delivering()) == "finished"
    code, text = _run(tmp_path, monkeypatch, capsys, "resume", "--yes")
    assert code == 0
    assert "Objective #1 finished" in text and "Draft the deliverable · writer" in text
    assert "auto-approved" not in text, "nothing decided long ago is asked again"
    code, text = _run(tmp_path, monkeypatch, capsys, "resume", "--yes")
    assert code == 0 and "Nothing to resume" in text and "Objective #1" not in text


def test_status_of_an_unknown_objective_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    code, text = _run(tmp_path, monkeypatch, capsys, "status", "42")
    assert code == 1 and "There is no objective #42." in text


def test_run_with_injected_faults_shows_the_recovery_and_status_spend_sums_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    monkeypatch.setenv("THREADSWARM_OFFLINE_FAULTS", "500:0.2,bad_json:0.3")
    monkeypatch.setenv("THREADSWARM_OFFLINE_FAULT_SEED", "3")
    monkeypatch.setenv("THREADSWARM_OBJECTIVE_BUDGET_USD", "0.5")
    code, text = _run(tmp_path, monkeypatch, capsys, "run", "--yes", "--inject-faults",
                      "Launch a localized campaign for our SaaS in Japan [reject-always]")
    assert "Injecting faults into the offline model (500 20%, bad_json 30%, seed 3)" in text
    assert "InternalServerError (500); retrying offline/rehearsal" in text
    assert "asking again with the errors" in text  # invalid JSON was re-asked
    assert "troubleshooter (1/2) on 'Draft the deliverable'" in text
    assert "Objective #1 finished" in text or "Objective #1 failed" in text
    assert "budget $0.5000" in text

    code, text = _run(tmp_path, monkeypatch, capsys, "status", "--spend")
    assert code == 0 and "#1 (" in text and " failed — Launch" in text and " cached, " in text
    assert "Spend per team and day (UTC)" in text and "local" in text
    assert "this month" in text


def test_run_writes_the_plans_pictures_and_says_where(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    code, text = _run(tmp_path, monkeypatch, capsys, "run", "--yes", "Write a press release")
    assert code == 0
    said = [line.split("picture of the plan:", 1)[1].strip() for line in text.splitlines()
            if "picture of the plan:" in line]
    assert len(said) == 2, "when the plan is proposed and when the objective ends"
    for path in map(Path, said):
        assert path.parent == tmp_path / "pictures"
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 300
    assert said[0] != said[1]
