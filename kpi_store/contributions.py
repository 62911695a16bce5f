"""What changed? The change of an additive KPI between two runs, split by a column.

For a KPI that sums a value column (or counts rows), the stored rows of each run are
summed, then grouped by a breakdown column and summed per group, in SQL on the store
(``GROUP BY`` over the value extracted from the stored JSON: ``json_extract`` on SQLite,
``jsonb`` on PostgreSQL); each breakdown value's part of the change is B − A. So
``total_change`` is recomputed from the rows independently of the groups, and
``explained`` is the sum of the parts. The runs' own ``value`` is not used: the
KPI's SQL may have rounded it (``ROUND(…, 2)``); sums here come from the rows as stored.

Breakdown values are compared as text, whatever their JSON type, so the same value from
two runs groups together even when a source wrote it differently: numbers by value (``1``
and ``1.0`` are "1", ``2.50`` is "2.5"), the text "1" with the number 1, booleans as
"true" / "false"; NULL and "" are one empty group (``value`` None, shown "(empty)").

Sums are exact when they can be: on PostgreSQL as NUMERIC; on SQLite as integers of
millionths when every value is below a billion and within float noise (a trillionth) of a
number of millionths (checked per value in SQL: 1235.5699999999999, what 1234.57 + 1 gives
in floating point, counts as 1235.57), else as floating point (``exact`` False: the parts
and the total then agree within rounding). With amounts in cents, the parts add up to the
total change to the cent.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from . import definitions, run_records
from .errors import ExecutionError, ValidationError
from .formats import format_number
from .models import ADDITIVE, KPI, Execution
from .result_views import NUMERIC_TYPES, _as_number, unique_names
from .results import check_exportable
from .schema import kpi_execution_result_rows as rows_table
from .story_records import Contribution, Contributions
from .vocabulary import Aggregation

MAX_TOP = 100
MAX_VALUES = 100_000  # distinct breakdown values per run: more is no longer a breakdown
SCALE = 1_000_000  # SQLite exact sums: integers of millionths
BELOW = 1e9  # ... of values below this (so value × SCALE stays an exact double)
NOISE = 1e-12  # ... each within this (relative) of a number of millionths: float noise
FETCH_ROWS = 5_000
_NUMBER_TEXT = r"^\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"  # as result_views reads text
_CONTEXT = decimal.Context(prec=60)  # sums of NUMERIC may pass the default 28 digits


@dataclass(frozen=True)
class Plan:
    """Where the breakdown and value columns are in each run's stored rows."""

    column: str
    key_a: int
    key_b: int
    aggregation: Aggregation
    value_column: str | None
    value_a: int | None
    value_b: int | None
    bool_key: bool  # the column holds booleans (SQLite reads them back as 1 and 0)


@dataclass
class Groups:
    """One run's rows grouped: breakdown text -> [rows, sum], and the ungrouped total."""

    parts: dict[str | None, list[Any]]
    rows: int
    total: Decimal


class _Inexact(Exception):  # noqa: N818 - internal signal: redo the sums as floats
    """A value the exact SQLite sum cannot hold (too many decimals, too large)."""


def what_changed(
    connection: sa.engine.Connection,
    run_a: int,
    run_b: int,
    column: str | None = None,
    top: int = 5,
) -> Contributions:
    """The change from run ``run_a`` to run ``run_b`` split by ``column`` (default: the
    KPI's breakdown column), with the ``top`` contributors each way."""
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise ValidationError(f"Show 1 to {MAX_TOP} top contributors; got {top!r}.")
    a, b = run_records.get(connection, run_a), run_records.get(connection, run_b)
    if a.kpi_id != b.kpi_id:
        raise ValidationError(
            f"Run {a.id} is of KPI {a.kpi_id} and run {b.id} of KPI {b.kpi_id}; "
            '"What changed?" splits the change between two runs of one KPI.'
        )
    for run in (a, b):
        _check_rows(run)
    kpi = definitions.get(connection, a.kpi_id)
    version_a = definitions.get(connection, a.kpi_id, a.kpi_version)
    version_b = definitions.get(connection, b.kpi_id, b.kpi_version)
    shape = plan(kpi, a, b, version_a, version_b, column)
    sides = ((a, shape.key_a, shape.value_a), (b, shape.key_b, shape.value_b))
    with decimal.localcontext(_CONTEXT):
        try:
            exact = True
            first, second = (_read(connection, run, k, v, shape, exact) for run, k, v in sides)
        except _Inexact:
            exact = False
            first, second = (_read(connection, run, k, v, shape, exact) for run, k, v in sides)
        return compose(a, b, kpi, shape, first, second, exact, top)


def _check_rows(run: Execution) -> None:
    check_exportable(run)  # succeeded, and its rows not removed by retention
    if run.truncated:
        raise ExecutionError(
            f"Run {run.id} was cut at the row cap ({run.row_count:,} rows kept): a split "
            "of its change over the rows it kept would be wrong."
        )


def plan(
    kpi: KPI, a: Execution, b: Execution, version_a: KPI, version_b: KPI, column: str | None
) -> Plan:
    """Check that the two runs' change can be split by ``column`` and where it is."""
    for version in (version_a, version_b):
        if version.aggregation not in ADDITIVE:
            raise ValidationError(
                f"KPI {kpi.name!r} (version {version.version}) takes the {version.aggregation} "
                "of its rows, which does not split into parts that add up; only a sum or a "
                "count does."
            )
    if _way(version_a) != _way(version_b):
        raise ValidationError(
            f"Runs {a.id} and {b.id} compute the KPI differently (version {version_a.version}: "
            f"{_way(version_a)}; version {version_b.version}: {_way(version_b)}); their "
            "change cannot be split into comparable parts."
        )
    chosen = column if column is not None else kpi.breakdown_column
    if chosen is None:
        raise ValidationError(
            f"KPI {kpi.name!r} declares no breakdown column; name the column to split by "
            f"(its rows have: {', '.join(unique_names([c.name for c in b.columns]))}).",
            {"column": "required"},
        )
    if not isinstance(chosen, str) or not chosen.strip():
        raise ValidationError(f"Name a column to split by; got {chosen!r}.", {"column": ""})
    names_a = unique_names([c.name for c in a.columns])
    names_b = unique_names([c.name for c in b.columns])
    _require_column(a, names_a, chosen, "no column")
    _require_column(b, names_b, chosen, "no column")
    aggregation = Aggregation(version_a.aggregation)
    value = None
    if aggregation == Aggregation.SUM:
        value = version_a.value_column or _first_numeric(a)
        _require_column(a, names_a, value, "no value column")
        _require_column(b, names_b, value, "no value column")
    kinds = {c.type for run in (a, b) for c in run.columns if c.name == chosen}
    return Plan(
        column=chosen,
        key_a=names_a.index(chosen),
        key_b=names_b.index(chosen),
        aggregation=aggregation,
        value_column=value,
        value_a=None if value is None else names_a.index(value),
        value_b=None if value is None else names_b.index(value),
        bool_key="bool" in kinds,
    )


def _way(version: KPI) -> str:
    if version.aggregation == Aggregation.COUNT:
        return "a count of rows"
    return f"the {version.aggregation} of {version.value_column or 'its first numeric column'}"


def _first_numeric(run: Execution) -> str | None:
    """The column a sum without a named value column adds up (as ``aggregate.py`` does)."""
    names = unique_names([c.name for c in run.columns])
    return next(
        (n for n, c in zip(names, run.columns, strict=True) if c.type in NUMERIC_TYPES), None
    )


def _require_column(run: Execution, names: list[str], column: str | None, what: str) -> None:
    if column not in names:
        listed = ", ".join(names)
        raise ValidationError(
            f"Run {run.id} has {what} {column!r}; its columns are: {listed}.", {"column": listed}
        )


# -- the sums, in SQL -------------------------------------------------------------------------


class _Rows:
    """A run's stored rows as SQL reads them: the breakdown value ``key`` of each row and
    its ``number`` (the value column read as a number; NULL when it is not one)."""

    def __init__(self, dialect: str, run_id: int, key: int, value: int | None):
        self.dialect = dialect
        if dialect != "postgresql":
            self.source: sa.FromClause = rows_table
            self.where = [rows_table.c.execution_id == run_id]
            self.key: sa.ColumnElement[Any] = sa.func.json_extract(
                rows_table.c.row_data, f"$[{key}]"
            )
            self.number = None if value is None else _as_number(dialect, value)
            return
        # Each row parsed once and each number read once: OFFSET 0 keeps a subquery apart,
        # so what it computes is not computed again for every use outside it.
        parsed = (
            sa.select(sa.cast(rows_table.c.row_data, postgresql.JSONB).label("j"))
            .where(rows_table.c.execution_id == run_id)
            .offset(0)
            .subquery("parsed")
        )
        columns = [parsed.c.j[key].label("k")]
        if value is not None:
            columns.append(_pg_number(parsed.c.j[value]).label("n"))
        read = sa.select(*columns).offset(0).subquery("read")
        self.source, self.where = read, []
        self.key = read.c.k
        self.number = None if value is None else read.c.n

    def select(self, *columns: Any) -> sa.Select[Any]:
        return sa.select(*columns).select_from(self.source).where(*self.where)


def _pg_number(item: Any) -> sa.ColumnElement[Any]:
    """A JSON value as NUMERIC: numbers, text that is a number (as ``result_views`` reads
    text), booleans as 1 and 0 (as the headline value counts them); else NULL."""
    kind = sa.func.jsonb_typeof(item)
    return sa.case(
        (kind == "number", sa.cast(item, sa.Numeric)),
        (
            sa.and_(kind == "string", item.astext.regexp_match(_NUMBER_TEXT)),
            sa.cast(item.astext, sa.Numeric),
        ),
        (kind == "boolean", sa.case((item.astext == "true", 1), else_=0)),
        else_=sa.null(),
    )


def _sums(rows: _Rows, exact: bool) -> tuple[Any, Any, bool]:
    """The sum expression, the "a value does not fit the exact sum" expression, and
    whether the sum comes back as integers of millionths."""
    nothing, number = sa.literal(0), rows.number
    if number is None:
        return sa.func.count(), nothing, False
    if rows.dialect == "postgresql":  # NUMERIC: exact, float noise rounded away
        near = sa.func.round(number, 6)
        noise = sa.func.abs(number - near) <= sa.literal(Decimal(repr(NOISE))) * sa.func.abs(number)
        return sa.func.sum(sa.case((noise, near), else_=number)), nothing, False
    if not exact:
        return sa.func.total(number), nothing, False
    scaled = sa.func.round(number * SCALE)
    moved = sa.func.abs(number - scaled / float(SCALE))  # 1235.5699999999999: 1235.57
    misfit = sa.or_(sa.func.abs(number) >= BELOW, moved > NOISE * sa.func.abs(number))
    return sa.func.sum(sa.cast(scaled, sa.Integer)), sa.func.max(misfit), True


def _read(
    connection: sa.engine.Connection,
    run: Execution,
    key: int,
    value: int | None,
    shape: Plan,
    exact: bool,
) -> Groups:
    """``run``'s rows summed, and grouped by the breakdown value and summed per group."""
    rows = _Rows(connection.dialect.name, run.id, key, value)
    amount, misfit, scaled = _sums(rows, exact)
    parts: dict[str | None, list[Any]] = {}
    count = grouped_rows = 0
    total: Any = None
    for raw, rows_in, sum_in, whole in _sql_sums(connection, rows, amount, misfit):
        if whole:
            count, total = rows_in, sum_in
            continue
        part = parts.setdefault(key_text(raw, shape.bool_key), [0, Decimal(0)])
        part[0] += rows_in
        part[1] += _decimal(sum_in, scaled)
        grouped_rows += rows_in
        if len(parts) > MAX_VALUES:
            raise ValidationError(
                f"Run {run.id} has more than {MAX_VALUES:,} different values in "
                f"{shape.column!r}; choose a column that groups its rows."
            )
    if not count == grouped_rows == (run.row_count or 0):
        raise ExecutionError(
            f"Run {run.id}'s rows changed while they were read ({run.row_count or 0:,} "
            f"stored, {count:,} summed, {grouped_rows:,} grouped); try again."
        )
    return Groups(parts, count, _decimal(total, scaled))


def _sql_sums(
    connection: sa.engine.Connection, rows: _Rows, amount: Any, misfit: Any
) -> Iterator[tuple[Any, int, Any, bool]]:
    """(breakdown value, rows, sum, False) per group and (None, rows, sum, True) for all
    the rows. PostgreSQL: one pass (``GROUP BY ROLLUP``, the total aggregated from the rows,
    not from the groups). SQLite: the total first (which checks that every value fits the
    exact sum, before the dearer grouping), then the groups."""
    if rows.dialect == "postgresql":
        whole = sa.func.grouping(rows.key)
        query = rows.select(rows.key, sa.func.count(), amount, whole)
        for raw, count, total, flag in _tuples(
            connection, query.group_by(sa.func.rollup(rows.key))
        ):
            yield raw, count, total, bool(flag)
        return
    [(count, total, unfit)] = _tuples(connection, rows.select(sa.func.count(), amount, misfit))
    if unfit:
        raise _Inexact
    yield None, count, total, True
    grouped = rows.select(rows.key.label("k"), sa.func.count(), amount).group_by(sa.text("k"))
    for raw, count, total in _tuples(connection, grouped):
        yield raw, count, total, False


def _tuples(connection: sa.engine.Connection, query: sa.Select[Any]) -> Iterator[tuple[Any, ...]]:
    """The rows of ``query`` (streamed from PostgreSQL); SQLite's "integer overflow" of an
    exact sum, raised while rows are stepped through, means: redo the sums as floats."""
    if connection.dialect.name == "postgresql":
        connection = connection.execution_options(stream_results=True, yield_per=FETCH_ROWS)
    try:
        for partition in connection.execute(query).partitions(FETCH_ROWS):
            yield from (tuple(row) for row in partition)
    except sa.exc.OperationalError as failed:
        if "integer overflow" in str(failed.orig):
            raise _Inexact from None
        raise


def _decimal(total: Any, scaled: bool) -> Decimal:
    """A sum as SQL gave it (NULL: no numbers), as an exact decimal."""
    if total is None:
        return Decimal(0)
    if scaled:
        return Decimal(int(total)).scaleb(-6)
    if isinstance(total, float):
        return Decimal(repr(total))  # the shortest decimal that reads back as this float
    return Decimal(total)


def key_text(value: Any, bool_column: bool = False) -> str | None:
    """A breakdown value as the text it groups by: None for NULL and ""; numbers by value
    ("1" for 1 and 1.0); booleans "true" / "false" (SQLite gives them back as 1 and 0,
    told apart by the column's type)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or (bool_column and isinstance(value, int) and value in (0, 1)):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, Decimal):
        return key_text(float(value))
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()  # an object or array (PostgreSQL decodes them)


# -- the answer -----------------------------------------------------------------------------


def compose(
    a: Execution,
    b: Execution,
    kpi: KPI,
    shape: Plan,
    first: Groups,
    second: Groups,
    exact: bool,
    top: int,
) -> Contributions:
    """Each breakdown value's change, the top ones each way, and the check that the parts
    add up to the total change recomputed from the rows."""
    total = second.total - first.total
    empty = (0, Decimal(0))
    changes = [
        (second.parts.get(v, empty)[1] - first.parts.get(v, empty)[1], v)
        for v in dict.fromkeys([*first.parts, *second.parts])
    ]
    explained = sum((change for change, _ in changes), Decimal(0))
    up = sorted((c for c in changes if c[0] > 0), key=lambda c: (-c[0], *_order(c[1])))
    down = sorted((c for c in changes if c[0] < 0), key=lambda c: (c[0], *_order(c[1])))
    shown = sum((change for change, _ in up[:top] + down[:top]), Decimal(0))

    def part(change: Decimal, value: str | None) -> Contribution:
        rows_a, sum_a = first.parts.get(value, empty)
        rows_b, sum_b = second.parts.get(value, empty)
        share = float(change / total) if total else None
        return Contribution(
            value=value,
            a=float(sum_a),
            b=float(sum_b),
            change=float(change),
            share=share,
            rows_a=rows_a,
            rows_b=rows_b,
        )

    return Contributions(
        kpi_id=kpi.id,
        run_a=a.id,
        run_b=b.id,
        column=shape.column,
        aggregation=shape.aggregation,
        value_column=shape.value_column,
        value_a=float(first.total),
        value_b=float(second.total),
        total_change=float(total),
        explained=float(explained),
        exact=exact,
        balanced=_balanced(explained, total, first, second, exact),
        run_value_a=a.value,
        run_value_b=b.value,
        up=[part(*c) for c in up[:top]],
        down=[part(*c) for c in down[:top]],
        all_count=len(changes),
        up_count=len(up),
        down_count=len(down),
        unchanged_count=len(changes) - len(up) - len(down),
        rest_change=float(explained - shown),
        note=_note(a, b, shape, exact),
    )


def _order(value: str | None) -> tuple[bool, str]:
    """Ties in order of the value's text, the empty group last."""
    return (value is None, value or "")


def _balanced(
    explained: Decimal, total: Decimal, first: Groups, second: Groups, exact: bool
) -> bool:
    if exact:
        return explained == total
    scale = max(Decimal(1), abs(first.total), abs(second.total))
    return abs(explained - total) <= scale * Decimal("1e-9")


def _note(a: Execution, b: Execution, shape: Plan, exact: bool) -> str:
    what = "the count of rows" if shape.value_column is None else f"the sum of {shape.value_column}"
    values = f"{format_number(a.value)} and {format_number(b.value)}"
    note = (
        f"Computed from the stored rows of runs {a.id} and {b.id}: {what} per "
        f"{shape.column}. The runs' own values ({values}) come from the KPI's query, which "
        "may round them; these sums do not."
    )
    if not exact:
        note += (
            " Some values have more than 6 decimals or are a billion or more, so the sums "
            "are floating point: the parts add up to the total within rounding."
        )
    return note
