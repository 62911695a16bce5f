"""Sorted and filtered views of a run's stored rows, over every row, not one page.

A view is a sort (up to five columns) and filters (combined with AND) over one run. The
first time a view is asked for, the store computes its order once, in SQL over the stored
rows, and keeps it as (view, position, row number) rows; every page of it is then a
position range, as cheap as an unsorted page. A sort without filters answers its first
pages at once with a top-N sort while its whole order is computed in the background
(``ViewBuilder``): a million rows take a couple of seconds to order, a top-N half a
second. A run keeps its few most recent views; they go with the run. Values are read
from the stored JSON arrays by position (``json_extract`` on SQLite, ``jsonb`` on
PostgreSQL) and compared by the column's type as the run recorded it: numbers as numbers,
dates and text as text (by code point, the same on both databases and in the grid),
empty values last.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.dialects import postgresql

from . import db
from .errors import ValidationError
from .models import Column, Execution
from .schema import kpi_execution_result_rows as rows_table
from .schema import kpi_result_view_rows as view_rows_table
from .schema import kpi_result_views as views_table

MAX_SORT_COLUMNS = 5
TOP_N_ROWS = 1_000  # pages of a sort-only view within this are sorted on the spot until kept
_SQLITE_VIEW_RANGE = (
    "SELECT r.row_data FROM kpi_result_view_rows AS v JOIN kpi_execution_result_rows AS r "
    "ON r.execution_id = ? AND r.row_number = v.row_number "
    "WHERE v.view_id = ? AND v.position BETWEEN ? AND ? ORDER BY v.position"
)
KNOWN_VIEWS = 256  # kept views a process remembers (saves a lookup per page)
MAX_FILTERS = 20
VIEWS_KEPT_PER_RUN = 6
NUMERIC_TYPES = frozenset({"int", "float", "decimal"})
FilterOp = Literal["contains", "equals", "starts_with", "between", "is_empty", "not_empty"]
FILTER_OPS: tuple[str, ...] = FilterOp.__args__  # type: ignore[attr-defined]


class ColumnFilter(BaseModel):
    """One condition on one column: text ``contains`` / ``equals`` / ``starts_with``
    (any case), ``between`` ``min`` and ``max`` (numbers, or ISO dates; either may be
    left out), ``is_empty`` / ``not_empty``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    column: str
    op: FilterOp
    value: str | float | int | None = None
    min: str | float | int | None = None
    max: str | float | int | None = None


SortKey = tuple[str, Literal["asc", "desc"]]


@dataclass(frozen=True)
class ViewSpec:
    """A checked sort and filter list; ``key`` names it among the run's views."""

    sort: tuple[SortKey, ...]
    filters: tuple[ColumnFilter, ...]

    @property
    def sort_only(self) -> bool:
        """No filters: the view has every row, so its total is known without a count."""
        return not self.filters

    @property
    def key(self) -> str:
        payload = {"sort": self.sort, "filters": [f.model_dump() for f in self.filters]}
        return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def describe(self) -> dict[str, Any]:
        """The view as plain data (for audit entries and export details)."""
        return {
            "sort": [list(k) for k in self.sort],
            "filters": [f.model_dump(exclude_none=True) for f in self.filters],
        }


@dataclass(frozen=True)
class View:
    id: int
    total: int  # rows in the view: the filtered count
    spec: ViewSpec

    def describe(self) -> dict[str, Any]:
        return self.spec.describe()


# -- checking what was asked ---------------------------------------------------------------


def unique_names(names: Sequence[str]) -> list[str]:
    """Column labels made unique (``SELECT a, a``): a, a_2. Grids and filters use these."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count + 1}")
    return unique


def checked_view(
    columns: Sequence[Column],
    sort: Iterable[Sequence[str]] | None,
    filters: Iterable[ColumnFilter | dict[str, Any]] | None,
) -> ViewSpec | None:
    """The sort and filters, checked against the run's columns; None when there are none."""
    names = unique_names([c.name for c in columns])
    sort_keys = tuple(_checked_sort(names, sort or ()))
    checked = tuple(_checked_filter(names, columns, f) for f in (filters or ()))
    if len(checked) > MAX_FILTERS:
        raise ValidationError(f"At most {MAX_FILTERS} filters at once; got {len(checked)}.")
    if not sort_keys and not checked:
        return None
    return ViewSpec(sort_keys, checked)


def _column_error(names: Sequence[str], column: Any) -> ValidationError:
    listed = ", ".join(names)
    return ValidationError(
        f"This result has no column {column!r}; its columns are: {listed}.", {"column": listed}
    )


def _checked_sort(names: Sequence[str], sort: Iterable[Sequence[str]]) -> Iterable[SortKey]:
    keys = list(sort)
    if len(keys) > MAX_SORT_COLUMNS:
        raise ValidationError(f"Sort by at most {MAX_SORT_COLUMNS} columns; got {len(keys)}.")
    for item in keys:
        pair = [item] if isinstance(item, str) else list(item)
        column, direction = (pair + ["asc"])[:2]
        if column not in names:
            raise _column_error(names, column)
        if direction not in ("asc", "desc"):
            raise ValidationError(f"Sort direction must be 'asc' or 'desc'; got {direction!r}.")
        yield (column, "desc" if direction == "desc" else "asc")


def _checked_filter(
    names: Sequence[str], columns: Sequence[Column], raw: ColumnFilter | dict[str, Any]
) -> ColumnFilter:
    try:
        item = raw if isinstance(raw, ColumnFilter) else ColumnFilter.model_validate(raw)
    except (ValueError, TypeError):
        ops = ", ".join(FILTER_OPS)
        raise ValidationError(
            f"A filter needs a column and an op ({ops}); got {raw!r}.", {"filters": ops}
        ) from None
    if item.column not in names:
        raise _column_error(names, item.column)
    kind = columns[names.index(item.column)].type
    if item.op in ("contains", "equals", "starts_with") and item.value in (None, ""):
        raise ValidationError(f"The {item.op!r} filter on {item.column!r} needs a value.")
    if item.op == "between":
        if item.min is None and item.max is None:
            raise ValidationError(f"The range filter on {item.column!r} needs a min or a max.")
        if kind in NUMERIC_TYPES:
            for bound in (item.min, item.max):
                if bound is not None and not _is_number(bound):
                    raise ValidationError(
                        f"The range on {item.column!r} takes numbers; got {bound!r}."
                    )
    return item


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


# -- values inside the stored JSON arrays ------------------------------------------------------


def _as_text(dialect: str, index: int) -> sa.ColumnElement[Any]:
    if dialect == "postgresql":
        return sa.cast(rows_table.c.row_data, postgresql.JSONB)[index].astext
    return sa.cast(sa.func.json_extract(rows_table.c.row_data, f"$[{index}]"), sa.Text)


def _as_number(dialect: str, index: int) -> sa.ColumnElement[Any]:
    if dialect == "postgresql":
        item = sa.cast(rows_table.c.row_data, postgresql.JSONB)[index]
        text = item.astext
        numeric = sa.or_(
            sa.func.jsonb_typeof(item) == "number",
            text.regexp_match(r"^\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"),
        )
        return sa.case((numeric, sa.cast(text, sa.Float)), else_=sa.null())
    return sa.cast(sa.func.json_extract(rows_table.c.row_data, f"$[{index}]"), sa.Float)


def _value(dialect: str, index: int, kind: str) -> sa.ColumnElement[Any]:
    return _as_number(dialect, index) if kind in NUMERIC_TYPES else _as_text(dialect, index)


def _condition(
    dialect: str, names: Sequence[str], columns: Sequence[Column], item: ColumnFilter
) -> sa.ColumnElement[bool]:
    index = names.index(item.column)
    kind = columns[index].type
    text = _as_text(dialect, index)
    if item.op == "is_empty":
        return sa.or_(text.is_(None), text == "")
    if item.op == "not_empty":
        return sa.and_(text.is_not(None), text != "")
    if item.op == "between":
        value = _value(dialect, index, kind)
        return sa.and_(*_bounds(value, text, kind, item))
    wanted = str(item.value).casefold()
    lowered = sa.func.lower(text)
    if item.op == "equals":
        if kind in NUMERIC_TYPES and _is_number(item.value):
            return _as_number(dialect, index) == sa.literal(float(item.value))  # type: ignore[arg-type]
        return lowered == sa.literal(wanted)
    pattern = db.like_escaped(wanted)
    pattern = f"%{pattern}%" if item.op == "contains" else f"{pattern}%"
    return lowered.like(pattern, escape="\\")


def _bounds(
    value: sa.ColumnElement[Any], text: sa.ColumnElement[Any], kind: str, item: ColumnFilter
) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if kind in NUMERIC_TYPES:
        if item.min is not None:
            conditions.append(value >= float(item.min))
        if item.max is not None:
            conditions.append(value <= float(item.max))
        return conditions
    if item.min is not None:
        conditions.append(text >= str(item.min))
    if item.max is not None:
        # "2024-03-31" includes that whole day of a date-and-time column.
        bound = str(item.max)
        conditions.append(sa.func.substr(text, 1, len(bound)) <= bound)
    return conditions


def _order(
    dialect: str, names: Sequence[str], columns: Sequence[Column], spec: ViewSpec
) -> list[sa.ColumnElement[Any]]:
    """Each sort column with its empty values last, then the run's own row order."""
    order: list[sa.ColumnElement[Any]] = []
    for column, direction in spec.sort:
        index = names.index(column)
        value = _value(dialect, index, columns[index].type)
        order.append(sa.case((value.is_(None), 1), else_=0))
        if dialect == "postgresql" and columns[index].type not in NUMERIC_TYPES:
            value = value.collate("C")  # code-point order, as SQLite and the grid compare
        order.append(value.desc() if direction == "desc" else value.asc())
    order.append(rows_table.c.row_number)
    return order


# -- keeping views ------------------------------------------------------------------------------


def find(engine: sa.engine.Engine, execution: Execution, spec: ViewSpec) -> View | None:
    """The view ``spec`` of ``execution`` if it was computed already."""
    with db.read_tx(engine) as connection:
        return _find(connection, execution.id, spec)


def ensure(engine: sa.engine.Engine, execution: Execution, spec: ViewSpec) -> View:
    """The view ``spec`` of ``execution``: found, or computed now over every stored row."""
    found = find(engine, execution, spec)
    if found is not None:
        return found
    with db.write_tx(engine) as connection:
        found = _find(connection, execution.id, spec)  # made meanwhile by someone else
        if found is not None:
            return found
        return _materialize(connection, execution, spec)


def _find(connection: sa.engine.Connection, execution_id: int, spec: ViewSpec) -> View | None:
    row = connection.execute(
        sa.select(views_table.c.id, views_table.c.row_count).where(
            views_table.c.execution_id == execution_id, views_table.c.spec_key == spec.key
        )
    ).first()
    return None if row is None else View(row.id, row.row_count, spec)


def _materialize(connection: sa.engine.Connection, execution: Execution, spec: ViewSpec) -> View:
    _forget_old_views(connection, execution.id)
    view_id = db.inserted_id(
        connection.execute(
            views_table.insert().values(
                execution_id=execution.id,
                spec_key=spec.key,
                spec=db.dumps(spec.describe()),
                row_count=0,
                created_at=db.utcnow(),
            )
        )
    )
    dialect = connection.dialect.name
    names = unique_names([c.name for c in execution.columns])
    position = sa.func.row_number().over(order_by=_order(dialect, names, execution.columns, spec))
    chosen = sa.select(sa.literal(view_id), position, rows_table.c.row_number).where(
        rows_table.c.execution_id == execution.id,
        *(_condition(dialect, names, execution.columns, f) for f in spec.filters),
    )
    inserted = connection.execute(
        view_rows_table.insert().from_select(["view_id", "position", "row_number"], chosen)
    )
    total = inserted.rowcount
    if total < 0:  # the driver did not say (psycopg, for INSERT … SELECT through Core)
        count = sa.select(sa.func.count()).where(view_rows_table.c.view_id == view_id)
        total = connection.execute(count).scalar_one()
    connection.execute(
        views_table.update().where(views_table.c.id == view_id).values(row_count=total)
    )
    return View(view_id, total, spec)


def _forget_old_views(connection: sa.engine.Connection, execution_id: int) -> None:
    kept = (
        sa.select(views_table.c.id)
        .where(views_table.c.execution_id == execution_id)
        .order_by(views_table.c.id.desc())
        .limit(VIEWS_KEPT_PER_RUN - 1)
    )
    old = sa.select(views_table.c.id).where(
        views_table.c.execution_id == execution_id, views_table.c.id.not_in(kept.scalar_subquery())
    )
    old_ids: list[int] = list(connection.execute(old).scalars())
    if old_ids:
        connection.execute(view_rows_table.delete().where(view_rows_table.c.view_id.in_(old_ids)))
        connection.execute(views_table.delete().where(views_table.c.id.in_(old_ids)))


def first_rows(
    connection: sa.engine.Connection, execution: Execution, spec: ViewSpec, first: int, last: int
) -> list[list[Any]]:
    """Rows ``first``..``last`` of a view not computed yet, sorted on the spot (a top-N
    sort: cheap for the first pages, dearer the deeper it goes)."""
    dialect = connection.dialect.name
    names = unique_names([c.name for c in execution.columns])
    query = (
        sa.select(rows_table.c.row_data)
        .where(
            rows_table.c.execution_id == execution.id,
            *(_condition(dialect, names, execution.columns, f) for f in spec.filters),
        )
        .order_by(*_order(dialect, names, execution.columns, spec))
        .limit(last - first + 1)
        .offset(first - 1)
    )
    stored: list[str] = list(connection.execute(query).scalars())
    return [orjson.loads(data) for data in stored]


class ViewBuilder:
    """Computes views in the background, one at a time, each once: a sort-only view's
    first pages are served by a top-N sort at once while its whole order is kept here."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpi-views")
        self._pending: dict[tuple[int, str], Future[View]] = {}
        self._known: dict[tuple[int, str], View] = {}  # kept views this process has seen
        self._lock = threading.Lock()

    def kept(self, execution: Execution, spec: ViewSpec) -> View | None:
        """The view if its order is kept (remembered here, else looked up)."""
        key = (execution.id, spec.key)
        with self._lock:
            view = self._known.get(key)
        if view is None:
            view = find(self.engine, execution, spec)
            if view is not None:
                self._remember(key, view)
        return view

    def _remember(self, key: tuple[int, str], view: View) -> None:
        with self._lock:
            if len(self._known) >= KNOWN_VIEWS:
                self._known.pop(next(iter(self._known)))
            self._known[key] = view

    def forget(self, execution_id: int) -> None:
        """Drop what this process remembers of a run's views (they were replaced)."""
        with self._lock:
            for key in [k for k in self._known if k[0] == execution_id]:
                del self._known[key]

    def build_soon(self, execution: Execution, spec: ViewSpec) -> Future[View]:
        key = (execution.id, spec.key)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pool.submit(self._build, execution, spec)
                self._pending[key] = pending
            return pending

    def _build(self, execution: Execution, spec: ViewSpec) -> View:
        try:
            view = ensure(self.engine, execution, spec)
        except sa.exc.IntegrityError:  # another process kept the same view meanwhile
            found = find(self.engine, execution, spec)
            if found is None:
                raise
            view = found
        finally:
            with self._lock:
                self._pending.pop((execution.id, spec.key), None)
        self.forget(execution.id)  # making it may have let the run's oldest view go
        self._remember((execution.id, spec.key), view)
        return view

    def settle(self) -> None:
        """Wait until every view asked for so far is kept."""
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def rows(
    connection: sa.engine.Connection, execution_id: int, view: View, first: int, last: int
) -> list[list[Any]]:
    """Rows at positions ``first``..``last`` of the view, in view order."""
    loads = orjson.loads
    return [loads(data) for data in rows_json(connection, execution_id, view, first, last)]


def rows_json(
    connection: sa.engine.Connection, execution_id: int, view: View, first: int, last: int
) -> list[str]:
    """The stored JSON of the rows at positions ``first``..``last`` of the view."""
    if connection.dialect.name == "sqlite":  # the driver directly: no result object per row
        cursor = db.driver(connection).execute(
            _SQLITE_VIEW_RANGE, (execution_id, view.id, first, last)
        )
        return [data for (data,) in cursor.fetchall()]
    query = (
        sa.select(rows_table.c.row_data)
        .select_from(
            view_rows_table.join(
                rows_table,
                sa.and_(
                    rows_table.c.execution_id == execution_id,
                    rows_table.c.row_number == view_rows_table.c.row_number,
                ),
            )
        )
        .where(
            view_rows_table.c.view_id == view.id, view_rows_table.c.position.between(first, last)
        )
        .order_by(view_rows_table.c.position)
    )
    return list(connection.execute(query).scalars())
