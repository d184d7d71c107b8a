"""Contract tests: the monolith and each extracted service answer the same requests alike."""
