"""Evaluating alert rules against finished runs, each run once per rule.

A run is evaluated when it finishes (the store's run-finished hook) and, should the
process die before that, by the worker's catch-up, which also sends the repeats due while
a rule keeps firing between runs. Each evaluation is one transaction: the rule's row is
locked and updated only if the run is newer than the last one it evaluated, the
notification is queued, and the evaluation is logged with why it notified or why not.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from . import alert_states, alerts, db, definitions, notifications, run_records
from .alert_records import AlertEvaluation, AlertRule, RuleTest, summary_line
from .alert_states import ConditionKind, Decision, Observation, Outcome, step
from .config import Settings
from .errors import NotFoundError
from .models import KPI, Execution
from .notification_records import NotificationEvent
from .schema import alert_evaluations as evaluations
from .schema import alert_rules as rules
from .schema import kpi_execution_results as executions
from .vocabulary import RunStatus

log = logging.getLogger(__name__)


class _Taken(Exception):  # noqa: N818 - internal signal: another evaluation got there first
    """The rule moved past this run while we looked: roll back, log nothing."""


class AlertWatch:
    """Evaluates runs against the rules watching their series. ``clock`` (naive UTC) is
    what "now" is for states, mutes and repeats; tests replace it to drive time."""

    def __init__(self, engine: sa.engine.Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self.clock: Callable[[], dt.datetime] = db.utcnow

    def run_finished(self, execution: Execution) -> None:
        """The run-finished hook: evaluate the run against every rule watching it."""
        self.evaluate_run(execution.id)

    def evaluate_run(self, run_id: int) -> list[AlertEvaluation]:
        """Evaluate a finished run against each active rule watching its series (one
        transaction each); a cancelled or unfinished run is not evaluated."""
        with db.read_tx(self.engine) as connection:
            run = run_records.get(connection, run_id)
            if run.status not in alerts.EVALUATED:
                return []
            watching = _watching(connection, run)
        done = (self.evaluate(rule_id, run.id) for rule_id in watching)
        return [evaluation for evaluation in done if evaluation is not None]

    def evaluate(self, rule_id: int, run_id: int) -> AlertEvaluation | None:
        """Evaluate one run for one rule; None when the rule is gone, off, does not watch
        the run, or has already seen it (logged once, never twice)."""
        try:
            with db.write_tx(self.engine) as connection:
                return self._evaluate(connection, rule_id, run_id)
        except _Taken:
            return None

    def catch_up(self, per_rule: int = 100) -> int:
        """The worker's chore: evaluate the finished runs newer than each active rule's
        last one (a process that died after a run loses nothing), then send the repeats
        due while rules keep firing between runs. Returns the evaluations logged."""
        with db.read_tx(self.engine) as connection:
            backlog = _backlog(connection, per_rule)
        done = 0
        for rule_id, run_id in backlog:
            try:
                done += self.evaluate(rule_id, run_id) is not None
            except Exception:  # one rule's fault must not hold the others back
                log.exception("alert rule %s could not evaluate run %s", rule_id, run_id)
        return done + self.remind()

    def remind(self) -> int:
        """Send the repeats that are due (``renotify_after`` since the last notification)
        for rules still firing when no new run came; each is logged."""
        now = self.clock()
        with db.read_tx(self.engine) as connection:
            firing = connection.execute(
                sa.select(rules).where(
                    rules.c.active.is_(True),
                    rules.c.state == alert_states.AlertState.FIRING,
                    rules.c.renotify_after_s.is_not(None),
                )
            )
            due = [
                rule.id
                for rule in map(alerts.to_rule, firing)
                if alert_states.reminder(rule.rule_state, rule.policy, now) is not None
            ]
        sent = 0
        for rule_id in due:  # checked again under the rule's lock
            with db.write_tx(self.engine) as connection:
                sent += self._remind(connection, rule_id)
        return sent

    def test(self, rule_id: int) -> RuleTest:
        """What evaluating the rule against its series' newest finished run would do now,
        without changing its state or telling anyone."""
        with db.read_tx(self.engine) as connection:
            rule = alerts.get(connection, rule_id)
            kpi = definitions.get(connection, rule.kpi_id)
            newest = alerts.newest_finished_run(connection, kpi.id, alerts.watched_key(rule, kpi))
            run = None if newest is None else run_records.get(connection, newest)
            seen = (
                Observation(Outcome.SKIPPED, detail="the series has no finished run yet")
                if run is None
                else _observe(connection, rule, kpi, run)
            )
        decision = step(rule.rule_state, seen, rule.policy, self.clock())
        return RuleTest(
            rule_id=rule.id,
            run_id=newest,
            **_figures(seen),
            state_before=decision.before.state,
            state_after=decision.after.state,
            would_notify=decision.kind,
            muted=decision.muted,
            reason=decision.reason,
        )

    # -- one evaluation, inside its transaction ------------------------------------------------

    def _evaluate(
        self, connection: sa.engine.Connection, rule_id: int, run_id: int
    ) -> AlertEvaluation | None:
        try:
            rule = alerts.get(connection, rule_id, lock=True)
            run = run_records.get(connection, run_id)
            kpi = definitions.get(connection, rule.kpi_id)
        except NotFoundError:  # deleted meanwhile (with its KPI)
            return None
        if not rule.active or alerts.watched_key(rule, kpi) != run.series_key:
            return None
        if run.status not in alerts.EVALUATED:
            return None
        now = self.clock()
        if _stored_sql_hash(connection, rule.id) != alerts.sql_hash(kpi.sql):
            why = alerts.sql_change_reason(connection, kpi)
            rule = alerts.reset(connection, rule, kpi, alerts.SYSTEM, why, now, keep_place=True)
        last = rule.last_evaluated_run_id
        if last is not None and run.id <= last:
            return self._older(connection, rule, run, last, now)
        skipped = _not_evaluated(connection, kpi, run, last)
        seen = (
            Observation(Outcome.SKIPPED, run.value, detail=skipped)
            if skipped
            else _observe(connection, rule, kpi, run)
        )
        decision = step(rule.rule_state, seen, rule.policy, now)
        claimed = connection.execute(
            rules.update()
            .where(
                rules.c.id == rule.id,
                sa.or_(
                    rules.c.last_evaluated_run_id.is_(None),
                    rules.c.last_evaluated_run_id < run.id,
                ),
            )
            .values(**alerts.state_columns(decision.after), last_evaluated_run_id=run.id)
        ).rowcount
        if claimed != 1:
            raise _Taken
        return self._log(connection, rule, kpi, run.id, seen, decision, now)

    def _older(
        self,
        connection: sa.engine.Connection,
        rule: AlertRule,
        run: Execution,
        last: int,
        now: dt.datetime,
    ) -> AlertEvaluation | None:
        """A run that finished after a newer one was seen: logged once as skipped, so it
        leaves a trace; the run already evaluated (or the rule's starting point) not."""
        if run.id == last or _logged(connection, rule.id, run.id):
            return None
        why = f"the rule had already seen a newer run ({last}) when this one finished"
        seen = Observation(Outcome.SKIPPED, run.value, detail=why)
        decision = step(rule.rule_state, seen, rule.policy, now)
        kpi = definitions.get(connection, rule.kpi_id)
        return self._log(connection, rule, kpi, run.id, seen, decision, now)

    def _remind(self, connection: sa.engine.Connection, rule_id: int) -> int:
        try:
            rule = alerts.get(connection, rule_id, lock=True)
        except NotFoundError:
            return 0
        now = self.clock()
        decision = alert_states.reminder(rule.rule_state, rule.policy, now)
        if not rule.active or decision is None:
            return 0
        claimed = connection.execute(
            rules.update()
            .where(rules.c.id == rule.id, rules.c.last_notified_at == rule.last_notified_at)
            .values(last_notified_at=now)
        ).rowcount
        if claimed != 1:
            return 0
        kpi = definitions.get(connection, rule.kpi_id)
        last = rule.last_evaluated_run_id
        run = None if last is None else run_records.get(connection, last)
        detail = f"no new run since run {last}; still firing" if last else "still firing"
        value, target = (None, None) if run is None else (run.value, kpi.target_for(run.params))
        seen = Observation(Outcome.MET, value, target, None, detail)
        self._log(connection, rule, kpi, None, seen, decision, now)
        return 1

    def _log(
        self,
        connection: sa.engine.Connection,
        rule: AlertRule,
        kpi: KPI,
        run_id: int | None,
        seen: Observation,
        decision: Decision,
        now: dt.datetime,
    ) -> AlertEvaluation:
        """Queue the notification (if one is due and not muted) and log the evaluation."""
        notified, recipients, reason = self._tell(connection, rule, kpi, run_id, seen, decision)
        values: dict[str, Any] = dict(
            rule_id=rule.id,
            run_id=run_id,
            evaluated_at=now,
            **_figures(seen),
            state_before=decision.before.state.value,
            state_after=decision.after.state.value,
            notification=decision.kind,
            notified=notified,
            recipients=recipients,
            reason=reason,
        )
        inserted = connection.execute(evaluations.insert().values(**values))
        return AlertEvaluation(id=db.inserted_id(inserted), **values)

    def _tell(
        self,
        connection: sa.engine.Connection,
        rule: AlertRule,
        kpi: KPI,
        run_id: int | None,
        seen: Observation,
        decision: Decision,
    ) -> tuple[bool, int, str]:
        """(notified, how many people and webhooks, why or why not)."""
        if decision.kind is None or not decision.notify:
            return False, 0, decision.reason
        people = alerts.recipients(connection, rule, kpi.data_source, self.settings.auth_on)
        hooks = list(rule.webhooks)
        if not people and not hooks:
            return False, 0, f"{decision.reason}; nobody to tell (no subscriber, no webhook)"
        event = NotificationEvent(
            kind=decision.kind,
            rule_id=rule.id,
            rule_name=rule.name,
            kpi_id=kpi.id,
            kpi_name=kpi.name,
            run_id=run_id,
            state=decision.after.state.value,
            value=seen.value,
            target=seen.target,
            change_pct=seen.change_pct,
            unit=kpi.unit,
            summary=summary_line(rule, kpi, seen, decision.kind),
            occurred_at=decision.after.last_notified_at or db.utcnow(),
        )
        notifications.enqueue(connection, event, people=people, webhooks=hooks)
        return True, len(people) + len(hooks), decision.reason


# -- reading what an evaluation needs ---------------------------------------------------------


def _watching(connection: sa.engine.Connection, run: Execution) -> list[int]:
    """The active rules of the run's KPI whose series is the run's."""
    kpi = definitions.get(connection, run.kpi_id)
    found = connection.execute(
        sa.select(rules).where(rules.c.kpi_id == run.kpi_id, rules.c.active.is_(True))
    )
    return [
        row.id for row in found if alerts.watched_key(alerts.to_rule(row), kpi) == run.series_key
    ]


def _backlog(connection: sa.engine.Connection, per_rule: int) -> list[tuple[int, int]]:
    """(rule, run) pairs still to evaluate, oldest run first per rule."""
    pairs: list[tuple[int, int]] = []
    kpis: dict[int, KPI] = {}
    for rule in alerts.listed(connection, active_only=True):
        if rule.kpi_id not in kpis:
            kpis[rule.kpi_id] = definitions.get(connection, rule.kpi_id)
        key = alerts.watched_key(rule, kpis[rule.kpi_id])
        if key is None:
            continue
        run_ids: sa.ScalarResult[int] = connection.execute(
            sa.select(executions.c.id)
            .where(
                executions.c.kpi_id == rule.kpi_id,
                executions.c.series_key == key,
                executions.c.status.in_(alerts.EVALUATED),
                executions.c.id > (rule.last_evaluated_run_id or 0),
            )
            .order_by(executions.c.id)
            .limit(per_rule)
        ).scalars()
        pairs.extend((rule.id, run_id) for run_id in run_ids)
    return pairs


def _stored_sql_hash(connection: sa.engine.Connection, rule_id: int) -> str:
    return connection.execute(sa.select(rules.c.sql_hash).where(rules.c.id == rule_id)).scalar_one()


def _logged(connection: sa.engine.Connection, rule_id: int, run_id: int) -> bool:
    found = connection.execute(
        sa.select(evaluations.c.id).where(
            evaluations.c.rule_id == rule_id, evaluations.c.run_id == run_id
        )
    ).first()
    return found is not None


def _not_evaluated(
    connection: sa.engine.Connection, kpi: KPI, run: Execution, last: int | None
) -> str:
    """Why a new run does not move the rule ("" when it does): it ran SQL the KPI no
    longer has, or it is an earlier period than one already seen (a backfill)."""
    if run.kpi_version != kpi.version:
        ran = definitions.version_entry(connection, kpi.id, run.kpi_version).spec.sql
        if ran != kpi.sql:
            return f"it ran version {run.kpi_version} of the KPI, whose SQL has changed since"
    if kpi.period is None or last is None or run.period_start is None:
        return ""
    seen = connection.execute(
        sa.select(executions.c.period_start).where(executions.c.id == last)
    ).scalar_one_or_none()
    if seen is not None and run.period_start < seen:
        return (
            f"its period ({run.period_start}) is earlier than one already seen ({seen}): "
            "backfilled history does not move the alert"
        )
    return ""


def _observe(
    connection: sa.engine.Connection, rule: AlertRule, kpi: KPI, run: Execution
) -> Observation:
    """The run seen through the rule's condition."""
    if run.status != RunStatus.SUCCESS:
        return alert_states.error(f"the run {run.status}: {run.error or 'no message'}")
    base = _previous_value(connection, kpi, run) if rule.condition == ConditionKind.CHANGE else None
    return alert_states.observe(
        rule.rule_condition,
        run.value,
        rag=kpi.rag_status(run.value, run.params),
        target=kpi.target_for(run.params),
        base=base,
    )


def _previous_value(connection: sa.engine.Connection, kpi: KPI, run: Execution) -> float | None:
    """The value of the previous successful run of the series: for a period KPI the
    run of the latest earlier period, else the run before this one."""
    query = sa.select(executions.c.value).where(
        executions.c.kpi_id == run.kpi_id,
        executions.c.series_key == run.series_key,
        executions.c.status == RunStatus.SUCCESS,
    )
    if kpi.period is not None and run.period_start is not None:
        query = query.where(executions.c.period_start < run.period_start).order_by(
            executions.c.period_start.desc(), executions.c.id.desc()
        )
    else:
        query = query.where(executions.c.id < run.id).order_by(executions.c.id.desc())
    return connection.execute(query.limit(1)).scalar_one_or_none()


def _figures(seen: Observation) -> dict[str, Any]:
    return dict(
        outcome=seen.outcome.value,
        condition_met=seen.met,
        value=seen.value,
        target=seen.target,
        change_pct=seen.change_pct,
        detail=seen.detail,
    )
