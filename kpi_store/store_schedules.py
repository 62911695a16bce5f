"""The part of ``KPIStore`` for schedules: KPIs that run themselves, fired by the workers.

Every worker calls ``run_due_schedules`` every ``KPI_SCHEDULE_POLL_S``. A due tick is
claimed by a conditional UPDATE of its schedule's ``next_run_at`` (``… WHERE id = :id AND
next_run_at = :due``: the row count decides), so however many workers poll, on SQLite or
PostgreSQL, each tick is decided once; the claim, the queued run and the tick's log row
are one transaction. The next fire time is the first after now, so after downtime a
schedule fires once, its tick counting the fire times it missed. A tick whose earlier run
is still queued or running queues nothing (``skipped``); one whose run cannot be created
(KPI archived, parameters no longer valid, its person deactivated) is ``failed`` with the
reason, and the schedule stays. Cron and zone rules: ``schedules.py``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import audit, db, definitions, people
from .access import Guard, Rule, allowed, unguarded, visible_kpis
from .config import Settings
from .errors import KPIStoreError, NotFoundError, ValidationError
from .models import KPI
from .queue import process_worker_id
from .runs import RunLedger
from .schedules import (
    MISSED_COUNT_CAP,
    CronPreview,
    Schedule,
    Tick,
    TickOutcome,
    as_utc,
    checked_cron,
    checked_params,
    checked_zone,
    missed_between,
    next_after,
    preview,
    resolved,
)
from .schema import kpi_definitions as kpis
from .schema import kpi_execution_results as executions
from .schema import kpi_schedule_ticks as ticks
from .schema import kpi_schedules as table
from .validation import checked_actor
from .vocabulary import ACTIVE_STATUSES, AuditAction, Role, RunMode

log = logging.getLogger(__name__)

CHANGEABLE = ("cron", "timezone", "params", "run_as", "active")
MAX_TICKS = 10_000


class ScheduleDesk:
    """Schedules: create, change, pause, resume, delete, read, and fire the due ones."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        settings: Settings
        ledger: RunLedger
        _guard: Guard

    # -- changes ----------------------------------------------------------------------------

    @allowed(Role.EDITOR, kpi="kpi_id")
    def create_schedule(
        self,
        kpi_id: int,
        cron: str,
        actor: str,
        *,
        timezone: str = "UTC",
        params: dict[str, Any] | None = None,
        run_as: str | None = None,
        active: bool = True,
    ) -> Schedule:
        """Run a KPI at the times ``cron`` names in ``timezone``, with ``params`` (date
        parameters may be relative: "start of last month"), as ``run_as`` (default: the
        actor; with sign-in on only an admin may name someone else). Audited."""
        actor = checked_actor(actor)
        given = {"cron": cron, "timezone": timezone, "params": params, "active": active}
        given["run_as"] = self._run_as(actor, run_as, "create_schedule")
        now = db.utcnow()
        with db.write_tx(self.engine) as connection:
            kpi = definitions.runnable(connection, kpi_id)
            values = _checked(connection, self.settings, kpi, given, "UTC", now)
            values["next_run_at"] = _next_run(values["cron"], values["timezone"], active, now)
            stamp = {"created_at": now, "created_by": actor, "updated_at": now}
            inserted = connection.execute(
                table.insert().values(kpi_id=kpi.id, **_stored(values), **stamp, updated_by=actor)
            )
            schedule = _get(connection, db.inserted_id(inserted))
            _audit(connection, actor, AuditAction.SCHEDULE_CREATE, schedule, _shown(schedule))
            return schedule

    @allowed(Role.EDITOR)
    def update_schedule(self, schedule_id: int, actor: str, **changes: Any) -> Schedule:
        """Change a schedule's ``cron``, ``timezone``, ``params``, ``run_as`` or
        ``active``; a new cron, zone or resumption counts the next fire time from now.
        Audited with what changed, from and to; no change, no entry."""
        unknown = sorted(set(changes) - set(CHANGEABLE))
        if unknown:
            raise ValidationError(
                f"A schedule has no field {', '.join(unknown)}; these can change: "
                f"{', '.join(CHANGEABLE)}.",
                {name: "is not a schedule field" for name in unknown},
            )
        return self._change(schedule_id, checked_actor(actor), changes, "update_schedule")

    @allowed(Role.EDITOR)
    def pause_schedule(self, schedule_id: int, actor: str) -> Schedule:
        """Stop firing until resumed (``next_run_at`` becomes None). Audited."""
        return self._change(schedule_id, checked_actor(actor), {"active": False}, "pause_schedule")

    @allowed(Role.EDITOR)
    def resume_schedule(self, schedule_id: int, actor: str) -> Schedule:
        """Fire again, from the first fire time after now (missed ones are not made up)."""
        changes = {"active": True}
        return self._change(schedule_id, checked_actor(actor), changes, "resume_schedule")

    @allowed(Role.EDITOR)
    def delete_schedule(self, schedule_id: int, actor: str) -> None:
        """Remove a schedule and its tick log; its runs stay. Audited."""
        actor = checked_actor(actor)
        self._in_scope(schedule_id, Role.EDITOR, "delete_schedule", actor)
        with db.write_tx(self.engine) as connection:
            schedule = _get(connection, schedule_id, lock=True)
            connection.execute(table.delete().where(table.c.id == schedule_id))
            _audit(connection, actor, AuditAction.SCHEDULE_DELETE, schedule, _shown(schedule))

    def _change(
        self, schedule_id: int, actor: str, changes: dict[str, Any], operation: str
    ) -> Schedule:
        self._in_scope(schedule_id, Role.EDITOR, operation, actor)
        if "run_as" in changes:
            changes = {**changes, "run_as": self._run_as(actor, changes["run_as"], operation)}
        now = db.utcnow()
        with db.write_tx(self.engine) as connection:
            before = _get(connection, schedule_id, lock=True)
            kpi = definitions.get(connection, before.kpi_id)
            values = _checked(connection, self.settings, kpi, changes, before.timezone, now)
            old = before.model_dump()
            changed = {name: value for name, value in values.items() if old[name] != value}
            if not changed:
                return before
            if changed.keys() & {"cron", "timezone", "active"}:
                after = {**old, **changed}
                next_at = _next_run(after["cron"], after["timezone"], after["active"], now)
                if next_at != before.next_run_at:
                    changed["next_run_at"] = next_at
            connection.execute(
                table.update()
                .where(table.c.id == schedule_id)
                .values(**_stored(changed), updated_at=now, updated_by=actor)
            )
            schedule = _get(connection, schedule_id)
            shown_before, shown_after = _shown(before), _shown(schedule)
            details = {
                "from": {name: shown_before[name] for name in changed},
                "to": {name: shown_after[name] for name in changed},
            }
            _audit(connection, actor, AuditAction.SCHEDULE_UPDATE, schedule, details)
            return schedule

    def _run_as(self, actor: str, run_as: Any, operation: str) -> str:
        """Whom the schedule runs as: the actor by default; with sign-in on, someone
        else only when an admin says so."""
        if not self.settings.auth_on:
            return checked_actor(actor if run_as is None else run_as)
        person = actor if run_as is None else people.normal_email(run_as)
        if person != actor:
            principal = self._guard.principal(actor, operation)
            if not principal.role.includes(Role.ADMIN):
                self._guard.deny(
                    actor,
                    operation,
                    f"only an admin may schedule runs as someone else; {actor} may "
                    "schedule them as themselves",
                )
        return person

    def _in_scope(self, schedule_id: int, role: Role, operation: str, actor: Any) -> Schedule:
        """The schedule, once the actor is shown to reach its KPI's data source."""
        with db.read_tx(self.engine) as connection:
            schedule = _get(connection, schedule_id)
        if self.settings.auth_on:
            rule = Rule(role, kpi="kpi_id")
            self._guard.check(rule, operation, {"actor": actor, "kpi_id": schedule.kpi_id})
        return schedule

    # -- reads ------------------------------------------------------------------------------

    @allowed(Role.VIEWER, kpi="kpi_id")
    def schedules(self, kpi_id: int | None = None, *, actor: str | None = None) -> list[Schedule]:
        """Every schedule (of one KPI), by KPI and then in the order they were made."""
        visible = visible_kpis(self._guard.sources(actor, "schedules"))
        query = sa.select(table).order_by(table.c.kpi_id, table.c.id)
        if kpi_id is not None:
            query = query.where(table.c.kpi_id == kpi_id)
        if visible is not None:
            query = query.where(table.c.kpi_id.in_(visible))
        with db.read_tx(self.engine) as connection:
            return [_to_schedule(row) for row in connection.execute(query)]

    @allowed(Role.VIEWER)
    def schedule(self, schedule_id: int, *, actor: str | None = None) -> Schedule:
        return self._in_scope(schedule_id, Role.VIEWER, "schedule", actor)

    @allowed(Role.VIEWER)
    def schedule_ticks(
        self, schedule_id: int, limit: int | None = 50, *, actor: str | None = None
    ) -> list[Tick]:
        """The schedule's decided ticks, newest first: fired, skipped or failed, and why."""
        if limit is not None and not (db.is_valid_id(limit) and limit <= MAX_TICKS):
            message = f"The number of ticks must be a whole number from 1 to {MAX_TICKS:,}."
            raise ValidationError(message, {"limit": message})
        self._in_scope(schedule_id, Role.VIEWER, "schedule_ticks", actor)
        query = sa.select(ticks).where(ticks.c.schedule_id == schedule_id)
        with db.read_tx(self.engine) as connection:
            rows = connection.execute(query.order_by(ticks.c.id.desc()).limit(limit))
            return [Tick.model_validate(dict(row._mapping)) for row in rows]

    @unguarded("checks and describes the expression it is given; reads nothing")
    def preview_schedule(self, cron: str, timezone: str = "UTC", n: int = 5) -> CronPreview:
        """A cron expression and zone before saving: in words, and its next ``n`` fire
        times (ValidationError naming what is wrong, or that it never fires)."""
        return preview(cron, timezone, n)

    # -- firing -----------------------------------------------------------------------------

    @unguarded("the workers' chore; each run is checked as its person when it starts")
    def run_due_schedules(self, now: dt.datetime | None = None) -> list[Tick]:
        """Decide every tick due at ``now`` (default: the clock; naive UTC or zone-aware):
        one queued run, skip or failure each, logged. Returns the ticks this call decided
        (a tick another worker claimed first is not among them)."""
        moment = as_utc(now)
        with db.read_tx(self.engine) as connection:
            due = connection.execute(
                sa.select(
                    table.c.id, table.c.kpi_id, table.c.cron, table.c.timezone, table.c.next_run_at
                )
                .where(table.c.active.is_(True), table.c.next_run_at <= moment)
                .order_by(table.c.next_run_at, table.c.id)
            ).all()
        decided_by = process_worker_id("schedules")
        decided: list[Tick] = []
        for row in due:
            try:
                tick = self._fire(row, moment, decided_by)
            except Exception:  # one schedule's fault must not hold up the others
                log.exception(
                    "schedule %s: the tick due %s was not decided", row.id, row.next_run_at
                )
                continue
            if tick is not None:
                decided.append(tick)
        return decided

    def _fire(self, due: sa.Row, now: dt.datetime, decided_by: str) -> Tick | None:
        """Claim one due tick and decide it, in one transaction; None when another worker
        claimed it first (or the schedule changed meanwhile)."""
        next_at = next_after(due.cron, due.timezone, now)
        missed = missed_between(due.cron, due.timezone, due.next_run_at, now)
        with db.write_tx(self.engine) as connection:
            # The KPI first, as delete_kpi takes it before its schedules (PostgreSQL).
            connection.execute(
                sa.select(kpis.c.id).where(kpis.c.id == due.kpi_id).with_for_update(read=True)
            )
            claimed = connection.execute(
                table.update()
                .where(
                    table.c.id == due.id,
                    table.c.next_run_at == due.next_run_at,
                    table.c.active.is_(True),
                    table.c.cron == due.cron,
                    table.c.timezone == due.timezone,
                )
                .values(next_run_at=next_at)
            ).rowcount
            if claimed != 1:
                return None
            schedule = _get(connection, due.id)
            outcome, reason, run_id = self._decide(connection, schedule, now)
            if outcome == TickOutcome.FIRED and missed:
                reason = _late(missed)
            tick = dict(schedule_id=due.id, due_at=due.next_run_at, decided_at=now)
            tick.update(outcome=outcome, reason=reason, run_id=run_id, missed=missed)
            tick_id = db.inserted_id(
                connection.execute(ticks.insert().values(**tick, decided_by=decided_by))
            )
            if run_id is not None:
                connection.execute(
                    table.update()
                    .where(table.c.id == due.id)
                    .values(last_run_at=now, last_run_id=run_id)
                )
        return Tick.model_validate({**tick, "id": tick_id, "decided_by": decided_by})

    def _decide(
        self, connection: sa.engine.Connection, schedule: Schedule, now: dt.datetime
    ) -> tuple[TickOutcome, str | None, int | None]:
        going = connection.execute(
            sa.select(executions.c.id, executions.c.status)
            .where(
                executions.c.schedule_id == schedule.id,
                executions.c.status.in_(sorted(ACTIVE_STATUSES)),
            )
            .order_by(executions.c.id)
            .limit(1)
        ).first()
        if going is not None:
            reason = (
                f"Run {going.id} of this schedule was still {going.status}; nothing was "
                "queued, so the KPI does not run twice at once."
            )
            return TickOutcome.SKIPPED, reason, None
        try:
            kpi = definitions.runnable(connection, schedule.kpi_id)
            problem = person_problem(connection, self.settings, schedule.run_as, kpi.data_source)
            if problem:
                raise ValidationError(f"It runs as {schedule.run_as}, and {problem}.")
            params = resolved(kpi, schedule.params, schedule.timezone, now)
            run_id = self.ledger.insert(
                connection,
                kpi.id,
                params,
                schedule.run_as,
                mode=RunMode.BACKGROUND,
                schedule_id=schedule.id,
            )
        except KPIStoreError as error:
            return TickOutcome.FAILED, str(error), None
        return TickOutcome.FIRED, None, run_id


# -- rows -------------------------------------------------------------------------------------


def person_problem(
    connection: sa.engine.Connection, settings: Settings, email: str, data_source: str
) -> str | None:
    """Why ``email`` may not have a KPI on ``data_source`` run for them now; None when
    they may (and always with sign-in off)."""
    if not settings.auth_on:
        return None
    person = people.find(connection, email)
    if person is None:
        return None if email in settings.admin_emails() else f"{email} is not a known person"
    if not person.active:
        return f"{email} has been deactivated"
    if not person.role.includes(Role.RUNNER):
        return f"{email} has the {person.role} role, and running a KPI needs the runner role"
    if person.data_sources and data_source not in person.data_sources:
        return f"{email} may not use the data source {data_source}"
    return None


def _checked(
    connection: sa.engine.Connection,
    settings: Settings,
    kpi: KPI,
    given: dict[str, Any],
    timezone: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """The fields given, checked and in the form they are kept; parameters are checked
    in the zone given, else ``timezone`` (the schedule's)."""
    values: dict[str, Any] = {}
    if "cron" in given:
        values["cron"] = checked_cron(given["cron"])
    if "timezone" in given:
        values["timezone"] = timezone = checked_zone(given["timezone"]).key
    if "params" in given:
        values["params"] = checked_params(kpi, given["params"], timezone, now)
    if "active" in given:
        if not isinstance(given["active"], bool):
            raise ValidationError("'active' is true or false.", {"active": "true or false"})
        values["active"] = given["active"]
    if "run_as" in given:
        problem = person_problem(connection, settings, given["run_as"], kpi.data_source)
        if problem:
            message = f"The schedule cannot run as {given['run_as']}: {problem}."
            raise ValidationError(message, {"run_as": problem})
        values["run_as"] = given["run_as"]
    return values


def _next_run(cron: str, timezone: str, active: bool, now: dt.datetime) -> dt.datetime | None:
    return next_after(cron, timezone, now) if active else None


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    return {k: db.dumps(v) if k == "params" else v for k, v in values.items()}


def _get(connection: sa.engine.Connection, schedule_id: Any, lock: bool = False) -> Schedule:
    if not db.is_valid_id(schedule_id):
        raise NotFoundError(f"There is no schedule with id {schedule_id!r}.")
    query = sa.select(table).where(table.c.id == schedule_id)
    row = connection.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFoundError(f"There is no schedule with id {schedule_id}.")
    return _to_schedule(row)


def _to_schedule(row: sa.Row) -> Schedule:
    values = dict(row._mapping)
    values["params"] = db.loads(values["params"]) or {}
    return Schedule.model_validate(values)


def _shown(schedule: Schedule) -> dict[str, Any]:
    """A schedule as its audit entries record it."""
    fields = ("cron", "timezone", "params", "run_as", "active", "next_run_at")
    return schedule.model_dump(mode="json", include=set(fields))


def _audit(
    connection: sa.engine.Connection,
    actor: str,
    action: AuditAction,
    schedule: Schedule,
    details: dict[str, Any],
) -> None:
    audit.append(
        connection,
        actor=actor,
        action=action,
        kpi_id=schedule.kpi_id,
        entity=f"schedule:{schedule.id}",
        details={"schedule_id": schedule.id, **details},
    )


def _late(missed: int) -> str:
    """Why a tick fired late, and where the fire times it missed went."""
    times = "1 later fire time" if missed == 1 else f"{missed:,} later fire times"
    if missed >= MISSED_COUNT_CAP:
        times = f"at least {times}"
    return (
        f"Fired late: {times} passed before a worker decided it (none was running, or all "
        "were busy); they are folded into this run."
    )
