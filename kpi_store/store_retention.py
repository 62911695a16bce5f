"""The part of ``KPIStore`` for Retention: removing old runs' stored rows, keeping their records."""

from __future__ import annotations


class RetentionDesk:
    """Retention: removing old runs' stored rows, keeping their records."""
