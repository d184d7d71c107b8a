"""Reports: cross-module read queries built only from other modules' service functions."""
