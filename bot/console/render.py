"""Rendering swarm events and views for the terminal (rich)."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

from swarm.events import CallRetried, PlanProposed, StepTroubleshot
from swarm.llm.budget import Ceiling
from swarm.store.spend import Spend, TeamDay
from swarm.store.views import ObjectiveView, StepView

STATE_MARK = {"pending": "·", "awaiting_approval": "?", "ready": "·", "running": "▶",
              "waiting_human": "…", "waiting_team": "⑂", "finished": "✔", "failed": "✖",
              "skipped": "–", "cancelled": "✖", "replaced": "⤷"}
_ACTION = {"retry": "retry with new instructions", "replan": "replace it by smaller steps",
           "ask_humans": "ask the humans"}


def plan_table(event: PlanProposed) -> Table:
    table = Table(title=f"Plan v{event.version} — {event.rationale}", title_justify="left")
    for col in ("step", "role", "title", "after", "approval"):
        table.add_column(col)
    for st in event.steps:
        table.add_row(st.key, st.role, st.title + (" (a team of its own)" if st.team else ""),
                      ", ".join(st.depends_on) or "—",
                      "needs approval" if st.needs_approval else "")
    return table


def status_table(view: ObjectiveView, ceiling: Ceiling | None = None) -> Table:
    budget = f" · budget {ceiling.show()}" if ceiling is not None and not ceiling.unlimited else ""
    table = Table(title=f"Objective #{view.id} ({view.state}) — {view.goal}",
                  title_justify="left", caption=f"{spend_text(view.spend)} · "
                                                f"{view.elapsed_s:.1f}s{budget}",
                  caption_justify="left")
    for col in ("", "step", "role", "title", "state", "attempts", "time", "tokens", "cost"):
        table.add_column(col)
    _step_rows(table, view)
    return table


def _step_rows(table: Table, view: ObjectiveView, prefix: str = "") -> None:
    """The steps, each team's own steps under its step (expanded: the whole tree)."""
    for st in [*view.steps, *view.replaced]:
        _step_row(table, st, prefix)
        if (team := view.teams.get(st.id)) is not None:
            table.add_row("", f"{prefix}{st.key}/", "team", f"#{team.id} {team.goal}",
                          team.state, "", f"{team.elapsed_s:.1f}s", f"{team.spend.tokens:,}",
                          team.spend.show_cost())
            _step_rows(table, team, f"{prefix}{st.key}/")


def _step_row(table: Table, st: StepView, prefix: str = "") -> None:
    elapsed = f"{st.elapsed_s:.1f}s" if st.elapsed_s is not None else ""
    table.add_row(STATE_MARK.get(st.state, " "), prefix + st.key, st.role, st.title, st.state,
                  str(st.attempts), elapsed, f"{st.spend.tokens:,}", st.spend.show_cost())


def spend_text(spend: Spend) -> str:
    failed = f", {spend.failed} failed" if spend.failed else ""
    return (f"{spend.tokens:,} tokens ({spend.prompt_tokens:,} prompt, "
            f"{spend.cached_tokens:,} cached, {spend.completion_tokens:,} completion) · "
            f"{spend.show_cost()} · {spend.calls} calls{failed}")


def spend_table(days: list[TeamDay], budgets: dict[str, tuple[Spend, Ceiling]]) -> Table:
    """Spend per team and day, then each team's month against its monthly budget."""
    table = Table(title="Spend per team and day (UTC)", title_justify="left")
    for col in ("day", "team", "calls", "failed", "prompt", "cached", "completion", "cost"):
        table.add_column(col, justify="left" if col in ("day", "team") else "right")
    for d in days:
        s = d.spend
        table.add_row(d.day, d.team_id, str(s.calls), str(s.failed), f"{s.prompt_tokens:,}",
                      f"{s.cached_tokens:,}", f"{s.completion_tokens:,}", s.show_cost())
    for team, (month, ceiling) in budgets.items():
        table.add_section()
        table.add_row("this month", team, str(month.calls), str(month.failed),
                      f"{month.prompt_tokens:,}", f"{month.cached_tokens:,}",
                      f"{month.completion_tokens:,}",
                      month.show_cost() + ("" if ceiling.unlimited else
                                              f" of {ceiling.show()}"))
    return table


def recovery_line(event: CallRetried) -> Text:
    verb = {"retry": f"retrying {event.next_model}",
            "fallback": f"falling back to {event.next_model}",
            "re-ask": "asking again with the errors"}.get(event.action, event.action)
    return Text(f"  ↻ {event.tier}: {event.model} — {event.problem}; {verb}", style="yellow")


def troubleshoot_lines(event: StepTroubleshot) -> Text:
    head = (f"🛠 troubleshooter ({event.intervention}/{event.limit}) on '{event.title}': "
            f"{_ACTION.get(event.action, event.action)} — {event.reason}")
    return Text(f"{head}\n    after: {event.error[:160]}\n    → {event.detail[:300]}",
                style="magenta")


def progress_line(view: ObjectiveView) -> Text:
    """The objective's bar, then one line per team below it (the tree, each with its counts)."""
    return Text("\n".join(_progress_lines(view, "  ")), style="dim")


def _progress_lines(view: ObjectiveView, indent: str, head: str = "") -> list[str]:
    running = sum(st.state == "running" for st in view.steps)
    bar = "".join("■" if st.state == "finished" else "▶" if st.state == "running" else
                  "⑂" if st.state == "waiting_team" else "□" for st in view.steps)
    lines = [f"{indent}{head}{bar} {view.done}/{len(view.steps)} done · {running} running · "
             f"{view.tokens} tokens · {view.spend.show_cost()} · {view.elapsed_s:.1f}s"]
    for st in view.steps:
        if (team := view.teams.get(st.id)) is not None:
            lines += _progress_lines(team, indent + "  ",
                                     f"└ {st.key} team #{team.id} ({team.state}) ")
    return lines
