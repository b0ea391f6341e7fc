"""Alembic migration environment of the registry (run through :mod:`certhub.registry.migrate`)."""
