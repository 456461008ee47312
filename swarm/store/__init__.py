"""The store: database, models, guarded writes, the outbox, the audit chain and read models."""
