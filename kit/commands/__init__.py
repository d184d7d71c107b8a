"""`kit` sub-command groups, one module each."""
