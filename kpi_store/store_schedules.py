"""The part of ``KPIStore`` for Schedules: KPIs that run themselves, fired by the workers."""

from __future__ import annotations


class ScheduleDesk:
    """Schedules: KPIs that run themselves, fired by the workers."""
