"""Rendering swarm events and views for the terminal (rich)."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

from swarm.events import PlanProposed
from swarm.views import ObjectiveView

STATE_MARK = {"pending": "·", "awaiting_approval": "?", "ready": "·", "running": "▶",
              "waiting_human": "…", "finished": "✔", "failed": "✖", "skipped": "–",
              "cancelled": "✖"}


def plan_table(event: PlanProposed) -> Table:
    table = Table(title=f"Plan v{event.version} — {event.rationale}", title_justify="left")
    for col in ("step", "role", "title", "after", "approval"):
        table.add_column(col)
    for st in event.steps:
        table.add_row(st.key, st.role, st.title, ", ".join(st.depends_on) or "—",
                      "needs approval" if st.needs_approval else "")
    return table


def status_table(view: ObjectiveView) -> Table:
    table = Table(title=f"Objective #{view.id} ({view.state}) — {view.goal}",
                  title_justify="left", caption=f"{view.tokens} tokens · ${view.cost:.4f} · "
                                                f"{view.elapsed_s:.1f}s", caption_justify="left")
    for col in ("", "step", "role", "title", "state", "attempts", "time"):
        table.add_column(col)
    for st in view.steps:
        elapsed = f"{st.elapsed_s:.1f}s" if st.elapsed_s is not None else ""
        table.add_row(STATE_MARK.get(st.state, " "), st.key, st.role, st.title, st.state,
                      str(st.attempts), elapsed)
    return table


def progress_line(view: ObjectiveView) -> Text:
    done = sum(st.state == "finished" for st in view.steps)
    running = sum(st.state == "running" for st in view.steps)
    bar = "".join("■" if st.state == "finished" else "▶" if st.state == "running" else "□"
                  for st in view.steps)
    return Text(f"  {bar} {done}/{len(view.steps)} done · {running} running · "
                f"{view.tokens} tokens · ${view.cost:.4f} · {view.elapsed_s:.1f}s", style="dim")
