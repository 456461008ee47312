"""Plain-text renderings of the scheduled events (digests, reminders, expiry, drift), for any
adapter: the console prints them, Slack uses them as notification text, and a new platform
can show them before it has a richer rendering of its own."""
from __future__ import annotations

from swarm.events import ApprovalExpired, ApprovalReminder, Digest, DriftDetected, Event


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{round(seconds)}s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def reminder(ev: ApprovalReminder) -> str:
    return (f"Reminder: approval #{ev.approval_id} ({ev.kind}) has waited "
            f"{duration(ev.waiting_s)}: {ev.title}. It expires in {duration(ev.expires_in_s)}; "
            f"until someone decides, nothing it asks for runs.")


def expired(ev: ApprovalExpired) -> str:
    return (f"Expired: approval #{ev.approval_id} ({ev.kind}) waited {duration(ev.waited_s)} "
            f"without a decision, so it did not run and objective #{ev.objective_id} is "
            f"paused. An admin can resume it; the {ev.kind} is then asked again.")


def drift(ev: DriftDetected) -> str:
    lines = [f"Drift detected in objective #{ev.objective_id} ({ev.signal}, score "
             f"{ev.score:.2f}): {ev.drifted}"]
    lines += [f"- {v.constraint}: {v.status} — \"{v.evidence}\"" for v in ev.violated]
    if ev.held:
        lines.append("Held until you decide: " + ", ".join(ev.held))
    lines.append(f"Suggested correction: {ev.correction}")
    lines.append(f"Approve #{ev.approval_id} to apply the correction, reject it to continue "
                 f"as planned, or cancel the objective.")
    return "\n".join(lines)


def digest(ev: Digest) -> str:
    budget = f" of ${ev.month_budget:.2f}" if ev.month_budget is not None else ""
    lower = "≥ " if ev.unpriced else ""
    lines = [f"Status digest since {ev.since[:16].replace('T', ' ')} UTC: {ev.started} started, "
             f"{ev.finished} finished, {ev.failed} failed, {ev.waiting} waiting.",
             f"Drift notices: {ev.drift_notices}. Spend: {lower}${ev.cost:.4f} here; the team "
             f"${ev.month_cost:.4f}{budget} this month."]
    if ev.approvals:
        lines.append("Approvals waiting:")
        lines += [f"- #{a.approval_id} (objective #{a.objective_id}) for "
                  f"{duration(a.waiting_s)}: {a.title}" for a in ev.approvals]
    else:
        lines.append("No approvals waiting.")
    return "\n".join(lines)


def plain(event: Event) -> str | None:
    """The event as text; None for events that have no plain rendering here."""
    match event:
        case ApprovalReminder():
            return reminder(event)
        case ApprovalExpired():
            return expired(event)
        case DriftDetected():
            return drift(event)
        case Digest():
            return digest(event)
    return None
