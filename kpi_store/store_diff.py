"""The part of ``KPIStore`` that compares two runs row by row (``run_diff.py``): the
summary, a page of each category, and the CSV export of the differences (audited).

Each method touches two runs: the rule names run ``a``; run ``b`` is checked with the
same rule inside the method, so a person limited to some data sources is held to both.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from . import db, run_diff
from .access import Guard, Rule, allowed
from .models import DiffPage, Execution, RunDiff
from .validation import checked_actor
from .vocabulary import Role

if TYPE_CHECKING:
    import sqlalchemy as sa


class DiffDesk:
    """Two runs compared: ``diff_runs``, ``diff_page``, ``export_diff_csv``."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        _guard: Guard

        def _execution(self, execution_id: int) -> Execution: ...

        def _exported(self, actor: str, execution: Execution, details: dict[str, Any]) -> None: ...

        def _check_rows(self, execution: Execution) -> None: ...

    def _both(
        self, a: int, b: int, key: Sequence[str] | str, role: Role, operation: str, actor: Any
    ) -> tuple[Execution, Execution, run_diff.Layout]:
        if self._guard.settings.auth_on:  # run a was checked by the method's rule
            self._guard.check(Rule(role, run="b"), operation, {"actor": actor, "b": b})
        first, second = self._execution(a), self._execution(b)
        for execution in (first, second):
            self._check_rows(execution)  # a pruned run says when and by which limit
        return first, second, run_diff.layout(first, second, key)

    @allowed(Role.VIEWER, run="a")
    def diff_runs(
        self, a: int, b: int, key: Sequence[str] | str, *, actor: str | None = None
    ) -> RunDiff:
        """Compare two successful runs row by row, rows matched by the ``key`` columns
        (by name): counts of rows only in A, only in B, changed and unchanged, each
        column's match percentage over the rows both have, the columns only one run has,
        and the KPI version or parameters that differ between the runs. A key two rows of
        a run share raises ``DuplicateKeyError`` naming the value and the run."""
        first, second, shape = self._both(a, b, key, Role.VIEWER, "diff_runs", actor)
        with db.read_tx(self.engine) as connection:
            return run_diff.summarize(connection, first, second, shape)

    @allowed(Role.VIEWER, run="a")
    def diff_page(
        self,
        a: int,
        b: int,
        key: Sequence[str] | str,
        category: str,
        page: int = 1,
        page_size: int = 50,
        *,
        actor: str | None = None,
    ) -> DiffPage:
        """One page of one category (``only_in_a``, ``only_in_b``, ``changed``) of the
        comparison, in key order; ``has_more`` says whether another page follows."""
        first, second, shape = self._both(a, b, key, Role.VIEWER, "diff_page", actor)
        with db.read_tx(self.engine) as connection:
            return run_diff.page(connection, first, second, shape, category, page, page_size)

    @allowed(Role.RUNNER, run="a")
    def export_diff_csv(
        self,
        a: int,
        b: int,
        key: Sequence[str] | str,
        dest: str | os.PathLike[str] | IO[str] | IO[bytes],
        actor: str,
        excel: bool = False,
    ) -> int:
        """Stream the differences between two runs to ``dest`` as CSV: the key columns,
        ``category``, ``column``, ``value_a``, ``value_b`` (a changed row: one line per
        differing column; a row only in one run: one line per column). Returns the lines
        written; audited as EXPORT."""
        actor = checked_actor(actor)
        first, second, shape = self._both(a, b, key, Role.RUNNER, "export_diff_csv", actor)
        count = run_diff.write_csv(self.engine, first, second, shape, dest, excel=excel)
        details = {"execution_id": a, "compared_with": b, "key": shape.key, "format": "csv"}
        self._exported(actor, first, {**details, "diff": True, "rows": count, "excel": excel})
        return count
