"""monolith package."""
