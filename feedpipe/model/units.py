"""Time units of the domain model: every time is an integer of epoch milliseconds (UTC)."""

MINUTE_MS = 60_000
"""Milliseconds in a minute."""

HOUR_MS = 3_600_000
"""Milliseconds in an hour."""
