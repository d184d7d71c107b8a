"""Alembic environments, one folder per database (each with its own version table).

A package so the environments ship inside the installed project; `kit.alembic_runner` finds
them through this package and drives them programmatically.
"""
