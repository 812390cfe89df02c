"""Constants shared by the tests."""

DEADLOCK_TIMEOUT = 60.0
"""Seconds a test waits for something that must happen; only reached on a deadlock."""
