"""The part of ``KPIStore`` that tells a number's story: unusual values and what changed.

``unusual`` / ``unusual_flags`` judge runs' values against their previous comparable runs
(``unusual.py``); ``what_changed`` splits the change between two runs of an additive KPI
by a breakdown column (``contributions.py``). Both only read. ``what_changed`` touches two
runs: the rule names run ``run_a``; run ``run_b`` is checked with the same rule inside,
so a person limited to some data sources is held to both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import contributions, db, run_records, unusual
from .access import Guard, Rule, allowed, visible_kpis
from .contributions import Contributions
from .unusual import UnusualCheck
from .vocabulary import Role

if TYPE_CHECKING:
    import sqlalchemy as sa


class StoryDesk:
    """Unusual values and "What changed?"."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        _guard: Guard

    @allowed(Role.VIEWER, run="run_id")
    def unusual(self, run_id: int, *, actor: str | None = None) -> UnusualCheck:
        """Whether a run's value lies outside median ± 3 × 1.4826 × MAD of its previous
        (at most 30) comparable runs: same KPI, parameter set and version family (same
        SQL, value column and aggregation), earlier runs, or earlier periods for a period
        KPI. Not judged (``unusual`` None, ``reason`` says why) with fewer than 8."""
        with db.read_tx(self.engine) as connection:
            return unusual.check_run(connection, run_records.get(connection, run_id))

    @allowed(Role.VIEWER)
    def unusual_flags(
        self, run_ids: Iterable[int], *, actor: str | None = None
    ) -> dict[int, UnusualCheck]:
        """``unusual`` for many runs at once (a History chart's whole series), in a few
        queries. Runs that do not exist or the actor may not see are left out, as
        ``runs`` leaves them out."""
        wanted = list(run_ids)
        kpis = visible_kpis(self._guard.sources(actor, "unusual_flags"))
        with db.read_tx(self.engine) as connection:
            found = run_records.many(connection, wanted)
            if kpis is not None:
                visible: set[int] = set(connection.execute(kpis).scalars())
                found = [run for run in found if run.kpi_id in visible]
            return unusual.check_runs(connection, found)

    @allowed(Role.VIEWER, run="run_a")
    def what_changed(
        self,
        run_a: int,
        run_b: int,
        *,
        column: str | None = None,
        top: int = 5,
        actor: str | None = None,
    ) -> Contributions:
        """Split the change from run ``run_a`` to run ``run_b`` of an additive KPI (a sum
        of its value column, or a count of rows) by ``column`` (default: the KPI's
        breakdown column; any column both runs have): each value's sum in A and B, its
        change and share of the total change, the ``top`` contributors up and down, and
        the check that the parts add up to the total change recomputed from the rows.
        Refused for other aggregations, runs cut at the row cap or without their rows,
        unknown columns and runs of two different KPIs."""
        if self._guard.settings.auth_on:  # run_a was checked by the method's rule
            rule = Rule(Role.VIEWER, run="run_b")
            self._guard.check(rule, "what_changed", {"actor": actor, "run_b": run_b})
        with db.read_tx(self.engine) as connection:
            return contributions.what_changed(connection, run_a, run_b, column, top)
