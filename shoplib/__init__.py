"""shoplib package."""
