"""Alembic migrations: the only way the service schema is created or changed.

Run `python -m core.service.migrate` (or `alembic -c migrations/alembic.ini upgrade head`).
"""
