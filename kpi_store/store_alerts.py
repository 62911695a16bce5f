"""The part of ``KPIStore`` for Alert rules over a KPI's series, their states and evaluation log."""

from __future__ import annotations


class AlertDesk:
    """Alert rules over a KPI's series, their states and evaluation log."""
