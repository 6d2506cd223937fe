"""Alembic migrations of the job store: one revision per schema change (see `storage.migrate`)."""
