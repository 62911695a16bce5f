"""The part of ``KPIStore`` for A KPI's series, its official number, period comparisons, backfill, unusual values and what changed."""

from __future__ import annotations


class SeriesDesk:
    """A KPI's series, its official number, period comparisons, backfill, unusual values and what changed."""
