"""extracted package."""
