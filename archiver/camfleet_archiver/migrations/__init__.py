"""Alembic migrations of the event history schema (applied by `camfleet_archiver.schema`)."""
