"""KPI definitions and their immutable version history.

Every create, update and restore writes a full snapshot to ``kpi_definition_history``
and an audit entry in the same transaction. Updates are conditional on the version the
editor started from, so two editors can never silently overwrite each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError as PydanticValidationError

from . import audit, db
from . import datasources as sources
from .errors import (
    ExecutionError,
    KPIStoreError,
    NotFoundError,
    ValidationError,
    VersionConflictError,
)
from .models import (
    KPI,
    SPEC_FIELDS,
    KPISpec,
    KPIVersion,
)
from .schema import kpi_definition_history as history
from .schema import kpi_definitions as table
from .schema import kpi_execution_results as executions
from .source_schema import PROBE_TIMEOUT_S, ProbeFailed, result_columns
from .validation import (
    check_date_ranges,
    check_parameters_match,
    check_read_only_sql,
    checked_note,
    parse_spec,
    placeholders,
    sqlglot_dialect,
)
from .vocabulary import Aggregation, KPIStatus

_JSON_FIELDS = ("parameters", "tags", "official_params", "targets", "period")


def validate_spec(connection: sa.engine.Connection, data: KPISpec | dict[str, Any]) -> KPISpec:
    """The full set of checks on a definition, against the current data sources."""
    spec = parse_spec(data)
    try:
        source = sources.get(connection, spec.data_source)
    except NotFoundError as error:
        raise ValidationError(str(error), {"data_source": str(error)}) from None
    tree = check_read_only_sql(spec.sql, sqlglot_dialect(sources.dialect_of(source.url)))
    check_parameters_match(spec, placeholders(tree))
    try:
        check_date_ranges(spec.parameters, {p.name: p.default for p in spec.parameters})
    except ValidationError as error:
        reason = str(error)
        message = f"The defaults are the wrong way round: {reason[0].lower()}{reason[1:]}"
        raise ValidationError(message, {"parameters": message}) from None
    return spec


# Fields that decide which columns the query returns and which one holds the value.
_COLUMN_FIELDS = ("data_source", "sql", "value_column", "aggregation")


def check_value_column(
    engine: sa.engine.Engine,
    spec: KPISpec,
    source_engines: sources.SourceEngines | None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> None:
    """Refuse a value column the query does not return, learnt from the source itself.

    The query runs read-only as ``SELECT * FROM (…) LIMIT 0`` with its parameters' defaults
    (NULL where there is none), under ``timeout_s``: no row is read. When the columns
    cannot be learnt (the query fails, the source does not answer in time) the definition
    is refused too, saying why. Nothing to check without a value column, or when the
    aggregation counts rows; nor without ``source_engines`` (the store's read-only engines).
    """
    if source_engines is None or spec.value_column is None:
        return
    if spec.aggregation == Aggregation.COUNT:
        return
    with db.read_tx(engine) as connection:
        url = sources.connect_url(connection, spec.data_source)
    try:
        names = result_columns(source_engines.get(url), spec, timeout_s)
    except ProbeFailed as failed:
        reason = str(failed).rstrip(".")
        message = (
            f"The value column '{spec.value_column}' could not be checked against the "
            f"query's result: {reason[0].lower() + reason[1:]}. Nothing was saved; fix the "
            "query (Test query shows what it returns), or leave the value column empty."
        )
        field = "sql" if failed.query_failed else "value_column"
        raise ValidationError(message, {field: message}) from None
    except KPIStoreError as error:  # the source itself cannot be opened
        message = f"The value column could not be checked: {error}"
        raise ValidationError(message, {"value_column": message}) from None
    if spec.value_column not in names:
        listed = ", ".join(names) or "none"
        message = (
            f"The value column '{spec.value_column}' is not in the query's result "
            f"(its columns: {listed})."
        )
        raise ValidationError(message, {"value_column": message})


def _columns(spec: KPISpec) -> dict[str, Any]:
    values = spec.model_dump(mode="json")
    for name in _JSON_FIELDS:
        values[name] = db.dumps(values[name])
    values["name_key"] = name_key(spec.name)
    return values


def name_key(name: str) -> str:
    """What two names share when they differ only by case (Unicode-aware)."""
    return name.strip().casefold()


def _spec_json(spec: KPISpec) -> str:
    return db.dumps(spec.model_dump(mode="json"))


def to_kpi(row: sa.Row) -> KPI:
    values = dict(row._mapping)
    del values["name_key"]
    for name in _JSON_FIELDS:
        stored = values.pop(name)
        if stored is not None:  # NULL: a row from before migration 0006, so the default
            values[name] = db.loads(stored)
    return KPI.model_validate(values)


def _check_name_free(connection: sa.engine.Connection, name: str, kpi_id: int | None) -> None:
    query = sa.select(table.c.id).where(
        table.c.name_key == name_key(name), table.c.status == KPIStatus.ACTIVE
    )
    if kpi_id is not None:
        query = query.where(table.c.id != kpi_id)
    if connection.execute(query).first():
        message = f"An active KPI named '{name}' already exists; choose another name."
        raise ValidationError(message, {"name": message})


def check_id(kpi_id: Any) -> None:
    if not db.is_valid_id(kpi_id):
        raise NotFoundError(f"There is no KPI with id {kpi_id!r}.")


def require_kpi(connection: sa.engine.Connection, kpi_id: int) -> sa.Row:
    check_id(kpi_id)
    row = connection.execute(sa.select(table).where(table.c.id == kpi_id)).first()
    if row is None:
        raise NotFoundError(f"There is no KPI with id {kpi_id}.")
    return row


def get(connection: sa.engine.Connection, kpi_id: int, version: int | None = None) -> KPI:
    current = to_kpi(require_kpi(connection, kpi_id))
    if version is None or version == current.version:
        return current
    snapshot = version_entry(connection, kpi_id, version)
    return KPI(
        **snapshot.spec.model_dump(),
        id=current.id,
        version=snapshot.version,
        status=current.status,
        created_at=current.created_at,
        created_by=current.created_by,
        updated_at=snapshot.changed_at,
        updated_by=snapshot.changed_by,
    )


def list_kpis(
    connection: sa.engine.Connection,
    search: str | None = None,
    tag: str | None = None,
    include_archived: bool = False,
) -> list[KPI]:
    """KPIs by name; ``search`` matches name, descriptions, owner or a tag, any case.

    Matching happens in Python: a catalogue is hundreds of KPIs, and SQL's lower() is
    ASCII-only on SQLite. So does sorting (by case-folded name, code point by code point):
    PostgreSQL would sort by its database's collation, which differs between servers.
    """
    query = sa.select(table)
    if not include_archived:
        query = query.where(table.c.status == KPIStatus.ACTIVE)
    kpis = [to_kpi(row) for row in connection.execute(query)]
    kpis.sort(key=lambda kpi: (name_key(kpi.name), kpi.id))
    if search and search.strip():
        needle = search.strip().casefold()
        kpis = [k for k in kpis if needle in _searchable_text(k)]
    if tag:
        kpis = [k for k in kpis if tag in k.tags]
    return kpis


def _searchable_text(kpi: KPI) -> str:
    parts = (kpi.name, kpi.description, kpi.nl_definition, kpi.owner, *kpi.tags)
    return "\n".join(parts).casefold()


@contextmanager
def _name_taken_as_validation() -> Iterator[None]:
    """A concurrent writer may take a name between our check and our write."""
    try:
        yield
    except sa.exc.IntegrityError as error:
        if "name_key" not in str(error.orig) and "uq_kpi_definitions" not in str(error.orig):
            raise
        message = "An active KPI with this name already exists; choose another name."
        raise ValidationError(message, {"name": message}) from None


def create(
    engine: sa.engine.Engine,
    data: KPISpec | dict[str, Any],
    actor: str,
    *,
    source_engines: sources.SourceEngines | None = None,
) -> KPI:
    """A new KPI at version 1; with ``source_engines``, its value column is checked
    against the query's result first (outside the write transaction: a data source is
    never waited on while the store is locked)."""
    if source_engines is not None:
        with db.read_tx(engine) as connection:
            checked = validate_spec(connection, data)
        check_value_column(engine, checked, source_engines)
    with _name_taken_as_validation(), db.write_tx(engine) as connection:
        spec = validate_spec(connection, data)
        _check_name_free(connection, spec.name, None)
        now = db.utcnow()
        kpi_id = db.inserted_id(
            connection.execute(
                table.insert().values(
                    **_columns(spec),
                    version=1,
                    status=KPIStatus.ACTIVE,
                    created_at=now,
                    created_by=actor,
                    updated_at=now,
                    updated_by=actor,
                )
            )
        )
        _write_history(connection, kpi_id, 1, spec, "create", "", actor, now)
        audit.append(
            connection,
            actor=actor,
            action=audit.CREATE,
            kpi_id=kpi_id,
            entity=f"kpi:{kpi_id}",
            details={"version": 1, "after": spec.model_dump(mode="json")},
        )
        return get(connection, kpi_id)


def _write_history(
    connection: sa.engine.Connection,
    kpi_id: int,
    version: int,
    spec: KPISpec,
    action: str,
    note: str,
    actor: str,
    when: Any,
) -> None:
    connection.execute(
        history.insert().values(
            kpi_id=kpi_id,
            version=version,
            definition=_spec_json(spec),
            action=action,
            note=note or "",
            changed_by=actor,
            changed_at=when,
        )
    )


def changed_fields(before: KPISpec, after: KPISpec) -> dict[str, dict[str, Any]]:
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    return {f: {"before": old[f], "after": new[f]} for f in SPEC_FIELDS if old[f] != new[f]}


@dataclass(frozen=True)
class EditOnTop:
    """How an edit made on an older version lands on a newer one.

    ``mine``: the fields the edit changed, with the edited values (as given); ``theirs``:
    the fields changed between the version opened and the newer one; ``overlap``: fields
    both changed, to different values. The edit can go on top when it changed something
    and nothing overlaps: ``update(…, mine, expected_version=newer)``.
    """

    mine: dict[str, Any]
    theirs: tuple[str, ...]
    overlap: tuple[str, ...]

    @property
    def possible(self) -> bool:
        return bool(self.mine) and not self.overlap


def edit_on_top(opened: KPISpec, edited: KPISpec | dict[str, Any], newer: KPISpec) -> EditOnTop:
    """Compare an edit of ``opened`` with ``newer`` (saved meanwhile), field by field.

    Each edited field is read as the definition would store it (an edited value that is
    not valid counts as changed), so "5" and 5, or " x " and "x", are the same value.
    """
    if isinstance(edited, KPISpec):
        edited = edited.model_dump()
    base = opened.model_dump()
    before = opened.model_dump(mode="json")
    after = newer.model_dump(mode="json")

    def stored(field: str, value: Any) -> Any:
        try:
            spec = KPISpec.model_validate({**base, field: value})
        except PydanticValidationError:
            return _Unreadable()
        return spec.model_dump(mode="json")[field]

    mine: dict[str, Any] = {}
    mine_stored: dict[str, Any] = {}
    for field in SPEC_FIELDS:
        if field in edited:
            value = stored(field, edited[field])
            if value != before[field]:
                mine[field], mine_stored[field] = edited[field], value
    theirs = tuple(changed_fields(opened, newer))
    overlap = tuple(f for f in theirs if f in mine and mine_stored[f] != after[f])
    return EditOnTop(mine=mine, theirs=theirs, overlap=overlap)


class _Unreadable:
    """An edited value that is not valid: equal to nothing."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


def _check_editable(current: KPI, expected_version: int) -> None:
    if current.version != expected_version:
        raise VersionConflictError(
            f"KPI '{current.name}' was changed by {current.updated_by} (now version "
            f"{current.version}) after you opened version {expected_version}. "
            "Reload it and apply your change again.",
            current_version=current.version,
            expected_version=expected_version,
        )
    if current.status != KPIStatus.ACTIVE:
        raise ValidationError(
            f"KPI '{current.name}' is archived; restore it from the archive before editing."
        )


def _checked_changes(changes: KPISpec | dict[str, Any]) -> dict[str, Any]:
    if isinstance(changes, KPISpec):
        changes = changes.model_dump()
    if not isinstance(changes, dict):
        raise ValidationError("Changes must be a mapping of KPI fields to new values.")
    unknown = sorted(set(changes) - set(SPEC_FIELDS))
    if unknown:
        raise ValidationError(
            f"Not KPI fields: {', '.join(unknown)}.", {n: "is not a KPI field" for n in unknown}
        )
    return changes


def runnable(connection: sa.engine.Connection, kpi_id: int) -> KPI:
    """The active KPI, share-locked (PostgreSQL) so a concurrent delete waits for its run."""
    check_id(kpi_id)
    connection.execute(sa.select(table.c.id).where(table.c.id == kpi_id).with_for_update(read=True))
    kpi = get(connection, kpi_id)
    if kpi.status != KPIStatus.ACTIVE:
        raise ValidationError(f"KPI '{kpi.name}' is archived and cannot run.")
    return kpi


def update(
    engine: sa.engine.Engine,
    kpi_id: int,
    changes: KPISpec | dict[str, Any],
    actor: str,
    expected_version: int,
    note: str = "",
    *,
    action: str = audit.UPDATE,
    source_engines: sources.SourceEngines | None = None,
) -> KPI:
    """Save a new version made of the current one plus ``changes``.

    With ``source_engines``, a change to the query, its data source, the value column or
    the aggregation is checked against the query's result first (``check_value_column``).
    """
    note = checked_note(note)  # NUL, invalid text and length refused with a clear message
    if source_engines is not None:
        with db.read_tx(engine) as connection:
            current = to_kpi(require_kpi(connection, kpi_id))
            _check_editable(current, expected_version)
            merged = current.spec().model_dump()
            merged.update(_checked_changes(changes))
            spec = validate_spec(connection, merged)
        if set(changed_fields(current.spec(), spec)) & set(_COLUMN_FIELDS):
            check_value_column(engine, spec, source_engines)
    with _name_taken_as_validation(), db.write_tx(engine) as connection:
        current = to_kpi(require_kpi(connection, kpi_id))
        _check_editable(current, expected_version)
        merged = current.spec().model_dump()
        merged.update(_checked_changes(changes))
        spec = validate_spec(connection, merged)
        changed = changed_fields(current.spec(), spec)
        if not changed:
            return current
        _check_name_free(connection, spec.name, kpi_id)
        now = db.utcnow()
        new_version = current.version + 1
        updated = connection.execute(
            table.update()
            .where(table.c.id == kpi_id, table.c.version == expected_version)
            .values(**_columns(spec), version=new_version, updated_at=now, updated_by=actor)
        ).rowcount
        if updated != 1:  # a concurrent writer on a database without our write lock
            raise VersionConflictError(
                f"KPI '{current.name}' was changed while you saved; reload it.",
                current_version=expected_version + 1,
                expected_version=expected_version,
            )
        history_action = "restore" if action == audit.RESTORE else "update"
        _write_history(connection, kpi_id, new_version, spec, history_action, note, actor, now)
        audit.append(
            connection,
            actor=actor,
            action=action,
            kpi_id=kpi_id,
            entity=f"kpi:{kpi_id}",
            details={"version": new_version, "note": note or "", "changes": changed},
        )
        return get(connection, kpi_id)


def restore(engine: sa.engine.Engine, kpi_id: int, version: int, actor: str) -> KPI:
    """A new version equal to an old one; history is never rewritten."""
    with db.read_tx(engine) as connection:
        current = get(connection, kpi_id)
        old = version_entry(connection, kpi_id, version)
    return update(
        engine,
        kpi_id,
        old.spec,
        actor,
        expected_version=current.version,
        note=f"Restored version {version}",
        action=audit.RESTORE,
    )


def set_status(engine: sa.engine.Engine, kpi_id: int, actor: str, status: str) -> KPI:
    with _name_taken_as_validation(), db.write_tx(engine) as connection:
        current = to_kpi(require_kpi(connection, kpi_id))
        if current.status == status:
            return current
        if status == KPIStatus.ACTIVE:
            _check_name_free(connection, current.name, kpi_id)
        now = db.utcnow()
        connection.execute(
            table.update()
            .where(table.c.id == kpi_id)
            .values(status=status, updated_at=now, updated_by=actor)
        )
        audit.append(
            connection,
            actor=actor,
            action=audit.ARCHIVE if status == "archived" else audit.UNARCHIVE,
            kpi_id=kpi_id,
            entity=f"kpi:{kpi_id}",
            details={"changes": {"status": {"before": current.status, "after": status}}},
        )
        return get(connection, kpi_id)


def delete(engine: sa.engine.Engine, kpi_id: int, actor: str) -> None:
    """Remove a KPI with its history and runs; the audit log keeps its last definition."""
    with db.write_tx(engine) as connection:
        # Lock the definition first (PostgreSQL): a run being queued for it either
        # commits before we count, or waits and then finds the KPI gone.
        check_id(kpi_id)
        connection.execute(sa.select(table.c.id).where(table.c.id == kpi_id).with_for_update())
        current = to_kpi(require_kpi(connection, kpi_id))
        active_runs = connection.execute(
            sa.select(sa.func.count())
            .select_from(executions)
            .where(executions.c.kpi_id == kpi_id, executions.c.status.in_(("pending", "running")))
        ).scalar_one()
        if active_runs:
            raise ExecutionError(
                f"KPI '{current.name}' has {active_runs} run(s) queued or in progress; "
                "cancel them or let them finish before deleting it."
            )
        connection.execute(table.delete().where(table.c.id == kpi_id))
        audit.append(
            connection,
            actor=actor,
            action=audit.DELETE,
            kpi_id=kpi_id,
            entity=f"kpi:{kpi_id}",
            details={"version": current.version, "before": current.spec().model_dump(mode="json")},
        )


def version_entry(connection: sa.engine.Connection, kpi_id: int, version: int) -> KPIVersion:
    row = connection.execute(
        sa.select(history).where(history.c.kpi_id == kpi_id, history.c.version == version)
    ).first()
    if row is None:
        require_kpi(connection, kpi_id)
        raise NotFoundError(f"KPI {kpi_id} has no version {version}.")
    return to_version(row)


def to_version(row: sa.Row) -> KPIVersion:
    return KPIVersion(
        kpi_id=row.kpi_id,
        version=row.version,
        spec=KPISpec.model_validate(db.loads(row.definition)),
        action=row.action,
        note=row.note,
        changed_by=row.changed_by,
        changed_at=row.changed_at,
    )
