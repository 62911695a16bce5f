"""The part of ``KPIStore`` about a run's stored rows: pages (sorted and filtered over
every row), downloads and exports, each export audited with its actor.

A mixin of the one facade, kept apart so each file stays readable; the rows themselves
are read and written by ``results.py``, ``result_views.py`` and ``exports.py``.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any

from . import audit, db, result_views, results
from .access import Guard, Rule, allowed, unguarded
from .errors import NotFoundError
from .export_links import ExportGrant, ExportTokens
from .models import AuditEntry, Execution, ResultPage
from .result_views import ColumnFilter, View
from .validation import checked_actor
from .vocabulary import Role

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa


FILE_BLOCK_BYTES = 256 * 1024


class ResultsDesk:
    """Pages of a run's rows, its sorted and filtered views, and every way to export them."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        _export_tokens: ExportTokens
        _guard: Guard
        _view_builder: result_views.ViewBuilder

        def _execution(self, execution_id: int) -> Execution: ...

        def _check_rows(self, execution: Execution) -> None: ...

    @allowed(Role.VIEWER, run="execution_id")
    def result_page(
        self,
        execution_id: int,
        page: int = 1,
        page_size: int = 50,
        sort: Sequence[tuple[str, str]] | None = None,
        filters: Sequence[ColumnFilter | dict[str, Any]] | None = None,
        *,
        actor: str | None = None,
    ) -> ResultPage:
        """One page of a successful run's rows, in the run's order or sorted and filtered
        over every stored row: ``sort=[("amount", "desc")]``, ``filters=[{"column":
        "region", "op": "equals", "value": "North"}]``; ``total`` is the filtered count."""
        execution = self._execution(execution_id)
        self._check_rows(execution)
        results.check_exportable(execution)
        spec = result_views.checked_view(execution.columns, sort, filters)
        view = None if spec is None else self._view_builder.kept(execution, spec)
        if spec is not None and view is None:
            if spec.sort_only and page * page_size <= result_views.TOP_N_ROWS:
                with db.read_tx(self.engine) as connection:
                    found = results.page(connection, execution, page, page_size, unkept=spec)
                self._view_builder.build_soon(execution, spec)  # kept for the later pages
                return found
            view = self._view_builder.build_soon(execution, spec).result()
        with db.read_tx(self.engine) as connection:
            found = results.page(connection, execution, page, page_size, view)
        if view is not None and spec is not None and not results.complete(found):
            # Another process let this view go since this one remembered it: make it again.
            self._view_builder.forget(execution.id)
            view = self._view_builder.build_soon(execution, spec).result()
            with db.read_tx(self.engine) as connection:
                found = results.page(connection, execution, page, page_size, view)
        return found

    @allowed(Role.VIEWER, run="execution_id")
    def result_frame(
        self,
        execution_id: int,
        page: int = 1,
        page_size: int = 50,
        sort: Sequence[tuple[str, str]] | None = None,
        filters: Sequence[ColumnFilter | dict[str, Any]] | None = None,
        *,
        actor: str | None = None,
    ) -> pd.DataFrame:
        """A page as a pandas DataFrame with dtypes from the column types."""
        result = self.result_page(execution_id, page, page_size, sort, filters, actor=actor)
        return results.frame(result)

    def _view(
        self,
        execution: Execution,
        sort: Sequence[tuple[str, str]] | None,
        filters: Sequence[ColumnFilter | dict[str, Any]] | None,
    ) -> View | None:
        """The sorted and filtered view asked for (computed once per run), or None."""
        self._check_rows(execution)
        results.check_exportable(execution)
        spec = result_views.checked_view(execution.columns, sort, filters)
        return None if spec is None else self._view_builder.build_soon(execution, spec).result()

    @allowed(Role.RUNNER, run="execution_id")
    def export_link(
        self,
        execution_id: int,
        actor: str,
        excel: bool = False,
        sort: Sequence[tuple[str, str]] | None = None,
        filters: Sequence[ColumnFilter | dict[str, Any]] | None = None,
        format: str = "csv",
    ) -> ExportGrant:
        """A single-use token, valid for a few minutes, to download every row of a
        successful run (or of its sorted and filtered view) over HTTP (``open_export``),
        as ``csv``, ``xlsx`` or ``parquet``. The sort, filters and format are checked now
        (an XLSX too big for a sheet is refused here); nothing is exported yet."""
        from . import exports

        actor = checked_actor(actor)
        kind = exports.checked_format(format)
        execution = self._execution(execution_id)
        self._check_rows(execution)
        results.check_exportable(execution)
        spec = result_views.checked_view(execution.columns, sort, filters)
        if kind == "xlsx":
            view = self._view(execution, sort, filters)
            rows = (execution.row_count or 0) if view is None else view.total
            exports.check_xlsx_fits(rows, execution.columns)
        kept_sort = spec.sort if spec else ()
        kept_filters = spec.filters if spec else ()
        return self._export_tokens.issue(
            execution_id, actor, excel, kept_sort, kept_filters, format=kind
        )

    @unguarded("the token's person is checked as a runner when it is redeemed")
    def open_export(self, token: str) -> tuple[ExportGrant, Iterable[str | bytes]]:
        """Redeem a download token: the EXPORT audit entry is written (with the name of
        the person the link was made for), then the file is returned in chunks, read as
        they are sent: CSV as text a few thousand rows at a time; XLSX and Parquet (whole
        only once written) as bytes of a temporary file that is removed after. Raises
        NotFoundError for a token that is unknown, used or expired."""
        grant = self._export_tokens.redeem(token)
        if grant is None:
            raise NotFoundError("This download link has expired or was used already.")
        if self._guard.settings.auth_on:
            arguments = {"actor": grant.actor, "execution_id": grant.execution_id}
            self._guard.check(Rule(Role.RUNNER, run="execution_id"), "open_export", arguments)
        execution = self._execution(grant.execution_id)
        view = self._view(execution, grant.sort, grant.filters)
        chunks: Iterable[str | bytes]
        if grant.format == "csv":
            chunks = results.csv_chunks(self.engine, execution, excel=grant.excel, view=view)
        else:
            chunks = self._file_chunks(execution, view, grant.format)
        rows = (execution.row_count or 0) if view is None else view.total
        details = {"execution_id": execution.id, "rows": rows, "format": grant.format}
        details |= {"excel": grant.excel, "via": "link", **_view_details(view)}
        self._exported(grant.actor, execution, details)
        return grant, chunks

    def _file_chunks(self, execution: Execution, view: View | None, kind: str) -> Iterator[bytes]:
        """An XLSX or Parquet file written to a temporary folder, then read out in blocks."""
        with tempfile.TemporaryDirectory(prefix="kpi-export-") as folder:
            path = pathlib.Path(folder) / f"run-{execution.id}.{kind}"
            self._write_export(execution, view, path, kind, excel=False)
            with path.open("rb") as handle:
                while block := handle.read(FILE_BLOCK_BYTES):
                    yield block

    @allowed(Role.RUNNER, run="execution_id")
    def export_csv(
        self,
        execution_id: int,
        dest: str | os.PathLike[str] | IO[str] | IO[bytes],
        actor: str,
        excel: bool = False,
        sort: Sequence[tuple[str, str]] | None = None,
        filters: Sequence[ColumnFilter | dict[str, Any]] | None = None,
    ) -> int:
        """Stream every row of a run (or of its sorted and filtered view) to ``dest`` as
        CSV; returns the number of rows."""
        actor = checked_actor(actor)
        execution = self._execution(execution_id)
        view = self._view(execution, sort, filters)
        count = results.write_csv(self.engine, execution, dest, excel=excel, view=view)
        details = {"execution_id": execution_id, "rows": count, "excel": excel}
        self._exported(actor, execution, {**details, **_view_details(view)})
        return count

    @allowed(Role.RUNNER, run="execution_id")
    def export_file(
        self,
        execution_id: int,
        dest: str | os.PathLike[str] | IO[str] | IO[bytes],
        actor: str,
        format: str = "csv",
        excel: bool = False,
        sort: Sequence[tuple[str, str]] | None = None,
        filters: Sequence[ColumnFilter | dict[str, Any]] | None = None,
    ) -> int:
        """Stream every row of a run (or of its sorted and filtered view) to ``dest`` (a
        path or a binary file; text files too for CSV) as ``csv``, ``xlsx`` or
        ``parquet``; returns the number of rows. The export is audited (EXPORT, with its
        format). ``excel`` (BOM, formula-safe text) applies to CSV; XLSX text is never a
        formula anyway. XLSX refuses a result larger than one sheet; Parquet refuses a
        value that does not fit its column's type (see ``exports``); either way nothing
        is left half written."""
        from . import exports  # XLSX and Parquet writers load their libraries lazily

        actor = checked_actor(actor)
        kind = exports.checked_format(format)
        execution = self._execution(execution_id)
        view = self._view(execution, sort, filters)
        count = self._write_export(execution, view, dest, kind, excel)
        details: dict[str, Any] = {"execution_id": execution_id, "format": kind, "rows": count}
        if kind == "csv":
            details["excel"] = excel
        self._exported(actor, execution, {**details, **_view_details(view)})
        return count

    def _write_export(
        self,
        execution: Execution,
        view: View | None,
        dest: str | os.PathLike[str] | IO[str] | IO[bytes],
        kind: str,
        excel: bool,
    ) -> int:
        from . import exports

        if kind == "csv":
            return results.write_csv(self.engine, execution, dest, excel=excel, view=view)
        binary = exports.binary_destination(dest, kind)
        chunks = results.row_chunks(self.engine, execution, view)
        rows = (execution.row_count or 0) if view is None else view.total
        if kind == "xlsx":  # refused before anything is written if over a sheet
            sheet = f"Run {execution.id}"
            return exports.write_xlsx(
                execution.columns, chunks, binary, row_count=rows, sheet_name=sheet
            )
        about = {"execution_id": execution.id, "kpi_id": execution.kpi_id}
        about["kpi_version"] = execution.kpi_version
        return exports.write_parquet(
            execution.columns, chunks, binary, metadata={"kpi_store.run": about}
        )

    @allowed(Role.RUNNER, run="execution_id")
    def page_csv(
        self,
        execution_id: int,
        page: int = 1,
        page_size: int = 50,
        excel: bool = False,
        sort: Sequence[tuple[str, str]] | None = None,
        filters: Sequence[ColumnFilter | dict[str, Any]] | None = None,
        *,
        actor: str,
    ) -> bytes:
        """One page of a run's rows (or of its sorted and filtered view) as CSV bytes,
        quoted and escaped like ``export_csv``."""
        actor = checked_actor(actor)
        execution = self._execution(execution_id)
        view = self._view(execution, sort, filters)
        with db.read_tx(self.engine) as connection:
            result = results.page(connection, execution, page, page_size, view)
        data = results.csv_bytes([c.name for c in result.columns], result.rows, excel)
        details = {"execution_id": execution_id, "rows": len(result.rows), "excel": excel}
        self._exported(actor, execution, {**details, "page": page, **_view_details(view)})
        return data

    def _exported(self, actor: str, execution: Execution, details: dict[str, Any]) -> None:
        entity = f"execution:{execution.id}"
        audit.record(
            self.engine,
            actor=actor,
            action=audit.EXPORT,
            kpi_id=execution.kpi_id,
            entity=entity,
            details=details,
        )

    @allowed(Role.ADMIN)
    def audit_csv(self, entries: Iterable[AuditEntry], excel: bool = True, *, actor: str) -> bytes:
        """Audit entries (e.g. a filtered ``audit_log``) as CSV bytes; the export is audited."""
        actor = checked_actor(actor)
        rows = audit.csv_rows(entries)
        data = results.csv_bytes(audit.CSV_HEADER, rows, excel)
        details = {"rows": len(rows), "excel": excel}
        audit.record(
            self.engine, actor=actor, action=audit.EXPORT, entity="audit_log", details=details
        )
        return data


def _view_details(view: View | None) -> dict[str, Any]:
    """What an export's audit entry says about the sorted and filtered view it exported."""
    return {} if view is None else {"view": view.describe()}
