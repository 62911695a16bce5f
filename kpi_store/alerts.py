"""Alert rules: reading them, writing them (each write audited in its transaction) and
subscriptions. Records are in ``alert_records.py``, checks in ``alert_checks.py``, the
state machine in ``alert_states.py``, evaluating runs in ``alert_watch.py``.

A rule watches one KPI series: the official parameter set (``params`` None, followed as
the KPI's official parameters change) or one named set, stored with its series key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from . import audit, db, definitions, series
from .alert_checks import FIELDS, RESETTING, checked
from .alert_records import AlertRule, AlertSubscription
from .alert_states import AlertState, RuleState, fresh
from .errors import NotFoundError, ValidationError
from .models import KPI
from .schema import alert_rules as rules
from .schema import alert_subscriptions as subscriptions
from .schema import kpi_execution_results as executions
from .schema import people as people_table
from .vocabulary import AuditAction, RunStatus

EVALUATED = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.TIMEOUT)  # cancelled: never
SYSTEM = "alerts"  # who resets a rule found stale while evaluating (the audit's actor)


# -- reading -----------------------------------------------------------------------------------


def to_rule(row: sa.Row, subscribers: Iterable[str] = ()) -> AlertRule:
    values = dict(row._mapping)
    values["params"] = db.loads(values["params"])
    values["webhooks"] = tuple(db.loads(values["webhooks"]) or ())
    values["value"] = values.pop("threshold")
    values.pop("sql_hash")
    return AlertRule.model_validate({**values, "subscribers": tuple(subscribers)})


def _subscribers(connection: sa.engine.Connection, rule_ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    if not rule_ids:
        return found
    query = (
        sa.select(subscriptions.c.rule_id, subscriptions.c.person)
        .where(subscriptions.c.rule_id.in_(rule_ids))
        .order_by(subscriptions.c.person)
    )
    for row in connection.execute(query):
        found.setdefault(int(row.rule_id), []).append(str(row.person))
    return found


def get(connection: sa.engine.Connection, rule_id: Any, *, lock: bool = False) -> AlertRule:
    """The rule (with its subscribers); NotFoundError when there is none."""
    if not db.is_valid_id(rule_id):
        raise NotFoundError(f"There is no alert rule with id {rule_id!r}.")
    query = sa.select(rules).where(rules.c.id == rule_id)
    row = connection.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise NotFoundError(f"There is no alert rule with id {rule_id}.")
    return to_rule(row, _subscribers(connection, [rule_id]).get(rule_id, ()))


def listed(
    connection: sa.engine.Connection,
    kpi_id: int | None = None,
    kpis: sa.Select[Any] | None = None,
    *,
    active_only: bool = False,
) -> list[AlertRule]:
    """Rules of one KPI (or all), oldest first; ``kpis`` limits them to visible KPIs."""
    query = sa.select(rules).order_by(rules.c.kpi_id, rules.c.id)
    if kpi_id is not None:
        query = query.where(rules.c.kpi_id == kpi_id)
    if kpis is not None:
        query = query.where(rules.c.kpi_id.in_(kpis))
    if active_only:
        query = query.where(rules.c.active.is_(True))
    rows = connection.execute(query).all()
    people = _subscribers(connection, [row.id for row in rows])
    return [to_rule(row, people.get(row.id, ())) for row in rows]


def sql_hash(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def watched_key(rule: AlertRule, kpi: KPI) -> str | None:
    """The series key the rule watches now (the official one follows the KPI)."""
    return series.official_key(kpi) if rule.official else rule.series_key


def newest_finished_run(
    connection: sa.engine.Connection, kpi_id: int, key: str | None
) -> int | None:
    """The newest evaluable run of a series: where a new or reset rule starts watching."""
    if key is None:
        return None
    return connection.execute(
        sa.select(sa.func.max(executions.c.id)).where(
            executions.c.kpi_id == kpi_id,
            executions.c.series_key == key,
            executions.c.status.in_(EVALUATED),
        )
    ).scalar_one_or_none()


# -- writing -----------------------------------------------------------------------------------


def _audit(
    connection: sa.engine.Connection,
    actor: str,
    action: AuditAction,
    rule: AlertRule,
    details: dict[str, Any],
) -> None:
    audit.append(
        connection,
        actor=actor,
        action=action,
        kpi_id=rule.kpi_id,
        entity=f"alert_rule:{rule.id}",
        details={"rule_id": rule.id, "name": rule.name, **details},
    )


def state_columns(state: RuleState) -> dict[str, Any]:
    return dict(
        state=state.state.value,
        state_since=state.since,
        met_streak=state.met_streak,
        good_streak=state.good_streak,
        firing_since=state.firing_since,
        firing_notified=state.firing_notified,
        last_notified_at=state.last_notified_at,
    )


def create(
    engine: sa.engine.Engine, kpi_id: int, actor: str, fields: dict[str, Any], now: dt.datetime
) -> AlertRule:
    """A new rule, ok, watching the runs that finish after its series' newest one
    (history is not replayed into it); audited as RULE_CREATE."""
    with db.write_tx(engine) as connection:
        kpi = definitions.get(connection, kpi_id)
        values = checked(connection, kpi, fields)
        key = values["series_key"] or series.official_key(kpi)
        start = newest_finished_run(connection, kpi.id, key)
        inserted = connection.execute(
            rules.insert().values(
                kpi_id=kpi.id,
                **values,
                **state_columns(fresh(now)),
                muted_until=None,
                sql_hash=sql_hash(kpi.sql),
                last_evaluated_run_id=start,
                created_at=now,
                created_by=actor,
                updated_at=now,
                updated_by=actor,
            )
        )
        rule = get(connection, db.inserted_id(inserted))
        _audit(connection, actor, AuditAction.RULE_CREATE, rule, {"rule": _shown(rule)})
        return rule


def _shown(rule: AlertRule) -> dict[str, Any]:
    """The rule's settings by their API names, as the audit log shows them."""
    return {f: rule.model_dump(mode="json")[f] for f in FIELDS}


def update(
    engine: sa.engine.Engine, rule_id: int, actor: str, changes: dict[str, Any], now: dt.datetime
) -> AlertRule:
    """Apply ``changes``; a change to what the state means (condition, parameter set,
    streak lengths) or a reactivation resets the rule to ok (RULE_RESET)."""
    if not isinstance(changes, dict):
        raise ValidationError("Changes must be given as field = value pairs.")
    unknown = sorted(str(name) for name in set(changes) - set(FIELDS))
    if unknown:
        raise ValidationError(f"Unknown rule field(s): {', '.join(unknown)}.")
    with db.write_tx(engine) as connection:
        current = get(connection, rule_id, lock=True)
        kpi = definitions.get(connection, current.kpi_id)
        values = checked(connection, kpi, _merged(current, changes))
        row = connection.execute(sa.select(rules).where(rules.c.id == rule_id)).one()
        if all(row._mapping[column] == value for column, value in values.items()):
            return current
        connection.execute(
            rules.update()
            .where(rules.c.id == rule_id)
            .values(**values, updated_at=now, updated_by=actor)
        )
        rule = get(connection, rule_id)
        before, after = _shown(current), _shown(rule)
        changed = {
            f: {"before": before[f], "after": after[f]} for f in FIELDS if before[f] != after[f]
        }
        _audit(connection, actor, AuditAction.RULE_UPDATE, rule, {"changes": changed})
        why = _reset_reason(current, changed)
        return reset(connection, rule, kpi, actor, why, now) if why else rule


def _merged(current: AlertRule, changes: dict[str, Any]) -> dict[str, Any]:
    """The settings after ``changes``: another kind of condition starts without the old
    one's operator, value and amber unless the changes give them."""
    merged = {**_shown(current), **changes}
    if "condition" in changes and changes["condition"] != current.condition:
        for field, blank in (("op", None), ("value", None), ("include_amber", False)):
            merged[field] = changes.get(field, blank)
    return merged


def _reset_reason(before: AlertRule, changed: dict[str, Any]) -> str:
    fields = [f for f in RESETTING if f in changed]
    if fields:
        return f"the rule was edited ({', '.join(fields)})"
    if "active" in changed and not before.active:
        return "the rule was switched on again"
    return ""


def reset(
    connection: sa.engine.Connection,
    rule: AlertRule,
    kpi: KPI,
    actor: str,
    why: str,
    now: dt.datetime,
    *,
    keep_place: bool = False,
) -> AlertRule:
    """Back to ok, no streaks, no open incident, audited as RULE_RESET saying ``why``.
    It watches from the newest finished run of its series (``keep_place``: from where it
    was, for a reset found while evaluating a run, which is then evaluated)."""
    start = rule.last_evaluated_run_id
    if not keep_place:
        newest = newest_finished_run(connection, kpi.id, watched_key(rule, kpi))
        start = max(start or 0, newest or 0) or None
    connection.execute(
        rules.update()
        .where(rules.c.id == rule.id)
        .values(
            **state_columns(fresh(now, rule.last_notified_at)),
            sql_hash=sql_hash(kpi.sql),
            last_evaluated_run_id=start,
        )
    )
    before = {"state": rule.state, "since": rule.state_since.isoformat()}
    _audit(connection, actor, AuditAction.RULE_RESET, rule, {"reason": why, "before": before})
    return get(connection, rule.id)


def reset_for_sql(engine: sa.engine.Engine, kpi_id: int, actor: str, now: dt.datetime) -> int:
    """Reset every rule of the KPI whose state is about other SQL than the KPI's now
    (after an edit or a restore); returns how many were reset. Takes no write lock when
    none is."""
    with db.read_tx(engine) as connection:
        if not _stale_for_sql(connection, kpi_id):
            return 0
    with db.write_tx(engine) as connection:
        kpi = definitions.get(connection, kpi_id)
        stale = _stale_for_sql(connection, kpi_id, lock=True)
        why = sql_change_reason(connection, kpi) if stale else ""
        for rule_id in stale:
            reset(connection, get(connection, rule_id), kpi, actor, why, now)
        return len(stale)


def _stale_for_sql(connection: sa.engine.Connection, kpi_id: int, lock: bool = False) -> list[int]:
    kpi = definitions.get(connection, kpi_id)
    query = sa.select(rules.c.id).where(
        rules.c.kpi_id == kpi_id, rules.c.sql_hash != sql_hash(kpi.sql)
    )
    return list(connection.execute(query.with_for_update() if lock else query).scalars())


def reset_for_official_params(
    engine: sa.engine.Engine, kpi_id: int, before: str | None, actor: str, now: dt.datetime
) -> int:
    """Reset the rules that watch a KPI's official series when its official parameter set
    changed from the one keyed ``before``: their state was about another series."""
    with db.write_tx(engine) as connection:
        kpi = definitions.get(connection, kpi_id)
        after = series.official_key(kpi)
        if after == before:
            return 0
        query = sa.select(rules.c.id).where(rules.c.kpi_id == kpi_id, rules.c.params.is_(None))
        stale: list[int] = list(connection.execute(query.with_for_update()).scalars())
        why = f"the KPI's official parameter set changed (version {kpi.version})"
        for rule_id in stale:
            reset(connection, get(connection, rule_id), kpi, actor, why, now)
        return len(stale)


def sql_change_reason(connection: sa.engine.Connection, kpi: KPI) -> str:
    """Why a rule is reset for its KPI's SQL: an edit, or a restored version."""
    saved = definitions.version_entry(connection, kpi.id, kpi.version)
    if saved.action == "restore":
        restored = saved.note or "an old version was restored"
        return f"{restored}, with other SQL (now version {kpi.version})"
    return f"the KPI's SQL changed (version {kpi.version})"


def delete(engine: sa.engine.Engine, rule_id: int, actor: str) -> None:
    """Remove a rule with its evaluation log and subscriptions; the audit keeps it."""
    with db.write_tx(engine) as connection:
        rule = get(connection, rule_id, lock=True)
        connection.execute(rules.delete().where(rules.c.id == rule_id))
        _audit(connection, actor, AuditAction.RULE_DELETE, rule, {"rule": _shown(rule)})


def mute(
    engine: sa.engine.Engine, rule_id: int, until: dt.datetime | None, actor: str, now: dt.datetime
) -> AlertRule:
    """Hold back the rule's notifications until ``until`` (None: unmute); its state
    still moves. Audited as RULE_UPDATE."""
    until = _utc(until)
    with db.write_tx(engine) as connection:
        current = get(connection, rule_id, lock=True)
        if current.muted_until == until:
            return current
        connection.execute(
            rules.update()
            .where(rules.c.id == rule_id)
            .values(muted_until=until, updated_at=now, updated_by=actor)
        )
        shown = {"before": _iso(current.muted_until), "after": _iso(until)}
        rule = get(connection, rule_id)
        _audit(
            connection, actor, AuditAction.RULE_UPDATE, rule, {"changes": {"muted_until": shown}}
        )
        return rule


def _utc(moment: Any) -> dt.datetime | None:
    """A time as the store keeps it (naive UTC); an aware time is converted."""
    if moment is None:
        return None
    if not isinstance(moment, dt.datetime):
        message = "Mute until a date and time (or nothing, to unmute)"
        raise ValidationError(f"{message}.", {"until": message})
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


# -- subscriptions -----------------------------------------------------------------------------


def subscribe(engine: sa.engine.Engine, rule_id: int, person: str, now: dt.datetime) -> bool:
    """Add ``person`` to the rule's subscribers (SUBSCRIBE); False when already there."""
    with db.write_tx(engine) as connection:
        rule = get(connection, rule_id, lock=True)
        if person in rule.subscribers:
            return False
        connection.execute(
            subscriptions.insert().values(rule_id=rule_id, person=person, created_at=now)
        )
        _audit(connection, person, AuditAction.SUBSCRIBE, rule, {})
        return True


def unsubscribe(engine: sa.engine.Engine, rule_id: int, person: str) -> bool:
    """Remove ``person`` from the rule's subscribers (UNSUBSCRIBE); False when not there."""
    with db.write_tx(engine) as connection:
        rule = get(connection, rule_id, lock=True)
        gone = connection.execute(
            subscriptions.delete().where(
                subscriptions.c.rule_id == rule_id, subscriptions.c.person == person
            )
        ).rowcount
        if gone:
            _audit(connection, person, AuditAction.UNSUBSCRIBE, rule, {})
        return bool(gone)


def subscribed(connection: sa.engine.Connection, person: str) -> list[AlertSubscription]:
    """The rules ``person`` is subscribed to, by KPI and rule."""
    query = (
        sa.select(subscriptions, rules.c.name, rules.c.kpi_id, rules.c.state)
        .join(rules, rules.c.id == subscriptions.c.rule_id)
        .where(subscriptions.c.person == person)
        .order_by(rules.c.kpi_id, rules.c.id)
    )
    return [
        AlertSubscription(
            rule_id=row.rule_id,
            rule_name=row.name,
            kpi_id=row.kpi_id,
            person=row.person,
            state=AlertState(row.state),
            subscribed_at=row.created_at,
        )
        for row in connection.execute(query)
    ]


def recipients(
    connection: sa.engine.Connection, rule: AlertRule, data_source: str, auth_on: bool
) -> list[str]:
    """Who a notification of ``rule`` goes to: with sign-in on, its subscribers who are
    still active people allowed to see the KPI's data source; else every subscriber."""
    if not auth_on:
        return list(rule.subscribers)
    found = connection.execute(
        sa.select(people_table.c.email, people_table.c.data_sources).where(
            people_table.c.email.in_(list(rule.subscribers)),
            people_table.c.active.is_(True),
        )
    )
    chosen: list[str] = []
    for row in found:
        scope = db.loads(row.data_sources) or []  # [] = every data source
        if not scope or data_source in scope:
            chosen.append(str(row.email))
    return sorted(chosen)
