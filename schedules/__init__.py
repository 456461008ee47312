"""Scheduled jobs (APScheduler): grounding checks, digests, reminders, recurring objectives."""
