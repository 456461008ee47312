"""Scheduled jobs (APScheduler): grounding checks, status digests, approval reminders and expiry,
recurring objectives."""
