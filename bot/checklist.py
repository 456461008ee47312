"""What a progress message says beside each step, the same on every chat surface (Slack and
Discord render these facts in their own markup): a state worth saying, the attempt, the
step's team as one line of its own counts (`/swarm status ID` expands it), the time taken."""
from __future__ import annotations

from swarm.store.views import ObjectiveView, StepView


def seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f}s" if value < 60 else f"{int(value // 60)}m{int(value % 60):02d}s"


def team_line(team: ObjectiveView) -> str:
    return (f"team #{team.id} {team.state.replace('_', ' ')}: "
            f"{team.done}/{len(team.steps)} steps · {team.tokens:,} tokens")


def step_facts(st: StepView, team: ObjectiveView | None = None) -> list[str]:
    facts = []
    if st.state not in ("finished", "pending", "ready"):
        facts.append(st.state.replace("_", " "))
    if st.attempts > 1 and team is None:
        facts.append(f"attempt {st.attempts}")
    if team is not None:
        facts.append(team_line(team))
    if (elapsed := seconds(st.elapsed_s)):
        facts.append(elapsed)
    return facts
