"""Revisions of the monolith database."""
