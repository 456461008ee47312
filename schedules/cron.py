"""Cron expressions as admins type them: five crontab fields, or six with seconds first."""
from __future__ import annotations

from datetime import UTC

from apscheduler.triggers.cron import CronTrigger

from swarm.contract import UserError

EXAMPLE = "`0 9 * * 1-5` (09:00 UTC on weekdays)"


def trigger(cron: str) -> CronTrigger:
    """The trigger of `cron` (UTC); a UserError that says what is wrong otherwise."""
    fields = cron.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(cron, timezone=UTC)
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                               day_of_week=dow, timezone=UTC)
    except ValueError as exc:
        raise UserError(f"`{cron}` is not a cron I can read ({exc}); e.g. {EXAMPLE}.") from exc
    raise UserError(f"A cron has five fields (minute hour day month weekday), not "
                    f"{len(fields)}: e.g. {EXAMPLE}.")
