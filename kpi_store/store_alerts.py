"""The part of ``KPIStore`` for Alert rules over a KPI's series, their states and evaluation log.

A rule is checked by ``alert_checks.py``, written by ``alerts.py``, moved by the state
machine in ``alert_states.py`` and evaluated by ``alert_watch.AlertWatch`` whenever a run
of its series finishes in this process (the run-finished hook) or, failing that, by the
worker's catch-up chore (``alert_watch.catch_up``).

Methods that take a rule id check the rule's KPI against the actor's data sources inside
(the method's rule checks the role); editors write rules, viewers read them and
(un)subscribe themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import alerts, db
from .access import Guard, Rule, allowed, visible_kpis
from .alert_records import (
    AlertEvaluation,
    AlertRule,
    AlertSubscription,
    KPIAlerts,
    RuleTest,
    kpi_alerts,
)
from .alert_watch import AlertWatch
from .config import Settings
from .errors import ValidationError
from .schema import alert_evaluations as evaluations
from .validation import checked_actor
from .vocabulary import Role

if TYPE_CHECKING:
    from .runs import FinishedHook

MAX_EVALUATIONS = 1_000  # one page of the evaluation log


class AlertDesk:
    """Alert rules over a KPI's series, their states and evaluation log."""

    alert_watch: AlertWatch

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        settings: Settings
        _guard: Guard

        def on_run_finished(self, hook: FinishedHook) -> FinishedHook: ...

    def _watch_alerts(self) -> None:
        """Evaluate every run this process ends against the rules watching its series."""
        self.alert_watch = AlertWatch(self.engine, self.settings)
        self.on_run_finished(self.alert_watch.run_finished)

    def _reset_alerts_for_sql(
        self, kpi_id: int, actor: str, official_before: str | None = None
    ) -> None:
        """After a KPI is saved or restored: reset its rules if its SQL is not what their
        state is about, and its official rules if its official parameter set moved from
        ``official_before`` (RULE_RESET saying why)."""
        now = self.alert_watch.clock()
        alerts.reset_for_sql(self.engine, kpi_id, actor, now)
        alerts.reset_for_official_params(self.engine, kpi_id, official_before, actor, now)

    def _rule_in_scope(self, rule_id: int, role: Role, operation: str, actor: Any) -> AlertRule:
        """The rule, once the actor may touch its KPI's data source (the method's own rule
        has checked the role)."""
        with db.read_tx(self.engine) as connection:
            rule = alerts.get(connection, rule_id)
        if self._guard.settings.auth_on:
            arguments = {"actor": actor, "kpi_id": rule.kpi_id}
            self._guard.check(Rule(role, kpi="kpi_id"), operation, arguments)
        return rule

    # -- writing rules ---------------------------------------------------------------------------

    @allowed(Role.EDITOR, kpi="kpi_id")
    def create_rule(
        self,
        kpi_id: int,
        actor: str,
        *,
        name: str,
        condition: str,
        op: str | None = None,
        value: float | None = None,
        params: dict[str, Any] | None = None,
        for_runs: int = 1,
        recover_runs: int = 1,
        renotify_after_s: float | None = None,
        notify_on_no_data: bool = False,
        notify_on_error: bool = True,
        webhooks: Sequence[str] = (),
        include_amber: bool = False,
    ) -> AlertRule:
        """A rule on the KPI's official series (``params`` None) or one named parameter
        set: ``condition`` ``off_target`` (red; ``include_amber`` adds amber),
        ``threshold`` (the value ``op`` ``value``) or ``change`` (the % change against
        the previous run, or period, ``op`` ``value``). It starts ok, watching runs that
        finish from now on. Audited as RULE_CREATE."""
        fields = dict(
            name=name,
            condition=condition,
            op=op,
            value=value,
            include_amber=include_amber,
            params=params,
            for_runs=for_runs,
            recover_runs=recover_runs,
            renotify_after_s=renotify_after_s,
            notify_on_no_data=notify_on_no_data,
            notify_on_error=notify_on_error,
            webhooks=webhooks,
        )
        now = self.alert_watch.clock()
        return alerts.create(self.engine, kpi_id, checked_actor(actor), fields, now)

    @allowed(Role.EDITOR)
    def update_rule(self, rule_id: int, changes: dict[str, Any], actor: str) -> AlertRule:
        """Change some of a rule's settings (the ``create_rule`` names, and ``active``).
        A change to its condition, parameter set or streak lengths, or switching it on
        again, resets it to ok (RULE_RESET). Audited as RULE_UPDATE."""
        actor = checked_actor(actor)
        self._rule_in_scope(rule_id, Role.EDITOR, "update_rule", actor)
        return alerts.update(self.engine, rule_id, actor, changes, self.alert_watch.clock())

    @allowed(Role.EDITOR)
    def delete_rule(self, rule_id: int, actor: str) -> None:
        """Remove a rule with its evaluation log and subscriptions (RULE_DELETE)."""
        actor = checked_actor(actor)
        self._rule_in_scope(rule_id, Role.EDITOR, "delete_rule", actor)
        alerts.delete(self.engine, rule_id, actor)

    @allowed(Role.EDITOR)
    def mute_rule(self, rule_id: int, until: dt.datetime | None, actor: str) -> AlertRule:
        """Hold back the rule's notifications until ``until`` (UTC when naive; None
        unmutes). Its state still moves and every evaluation is still logged."""
        actor = checked_actor(actor)
        self._rule_in_scope(rule_id, Role.EDITOR, "mute_rule", actor)
        return alerts.mute(self.engine, rule_id, until, actor, self.alert_watch.clock())

    # -- reading rules ---------------------------------------------------------------------------

    @allowed(Role.VIEWER, kpi="kpi_id")
    def rules(self, kpi_id: int | None = None, *, actor: str | None = None) -> list[AlertRule]:
        """The rules of one KPI (or of every KPI the actor may see), with their states."""
        kpis = visible_kpis(self._guard.sources(actor, "rules"))
        with db.read_tx(self.engine) as connection:
            return alerts.listed(connection, kpi_id, kpis)

    @allowed(Role.VIEWER)
    def rule(self, rule_id: int, *, actor: str | None = None) -> AlertRule:
        return self._rule_in_scope(rule_id, Role.VIEWER, "rule", actor)

    @allowed(Role.VIEWER)
    def rule_evaluations(
        self, rule_id: int, limit: int = 50, *, actor: str | None = None
    ) -> list[AlertEvaluation]:
        """The rule's evaluation log, newest first: each run's value, the states before
        and after, and whether it notified and, if not, why not."""
        self._rule_in_scope(rule_id, Role.VIEWER, "rule_evaluations", actor)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("The limit must be a whole number above 0.", {"limit": "bad"})
        limit = min(limit, MAX_EVALUATIONS)
        query = (
            sa.select(evaluations)
            .where(evaluations.c.rule_id == rule_id)
            .order_by(evaluations.c.id.desc())
            .limit(limit)
        )
        with db.read_tx(self.engine) as connection:
            rows = connection.execute(query)
            return [AlertEvaluation.model_validate(dict(row._mapping)) for row in rows]

    @allowed(Role.VIEWER)
    def test_rule(self, rule_id: int, *, actor: str | None = None) -> RuleTest:
        """What the rule would do with its series' newest finished run, now: the value,
        whether the condition holds, the next state and the notification, if any. Changes
        nothing and tells no one."""
        self._rule_in_scope(rule_id, Role.VIEWER, "test_rule", actor)
        return self.alert_watch.test(rule_id)

    @allowed(Role.VIEWER)
    def alert_states(
        self, kpi_ids: Iterable[int] | None = None, *, actor: str | None = None
    ) -> dict[int, KPIAlerts]:
        """For Overview cards: per KPI with active rules, the worst state among them (and
        how many there are, fire, and are muted). KPIs the actor may not see are left out."""
        kpis = visible_kpis(self._guard.sources(actor, "alert_states"))
        with db.read_tx(self.engine) as connection:
            found = alerts.listed(connection, None, kpis, active_only=True)
        wanted = None if kpi_ids is None else set(kpi_ids)
        chosen = [r for r in found if wanted is None or r.kpi_id in wanted]
        return kpi_alerts(chosen, self.alert_watch.clock())

    # -- subscriptions ---------------------------------------------------------------------------

    @allowed(Role.VIEWER)
    def subscribe(self, rule_id: int, actor: str) -> AlertRule:
        """Be told when the rule notifies (in the inbox, and by email when mail is set
        up). Audited as SUBSCRIBE; subscribing twice changes nothing."""
        person = checked_actor(actor)
        self._rule_in_scope(rule_id, Role.VIEWER, "subscribe", person)
        alerts.subscribe(self.engine, rule_id, person, self.alert_watch.clock())
        return self._rule(rule_id)

    @allowed(Role.VIEWER)
    def unsubscribe(self, rule_id: int, actor: str) -> AlertRule:
        """Stop being told about the rule (UNSUBSCRIBE)."""
        person = checked_actor(actor)
        self._rule_in_scope(rule_id, Role.VIEWER, "unsubscribe", person)
        alerts.unsubscribe(self.engine, rule_id, person)
        return self._rule(rule_id)

    @allowed(Role.VIEWER)
    def subscriptions(self, *, actor: str) -> list[AlertSubscription]:
        """The rules the actor is subscribed to, on KPIs they may still see."""
        person = checked_actor(actor)
        visible = self._guard.sources(person, "subscriptions")
        with db.read_tx(self.engine) as connection:
            mine = alerts.subscribed(connection, person)
            if visible is None:
                return mine
            kpis = visible_kpis(visible)
            assert kpis is not None
            seen: set[int] = set(connection.execute(kpis).scalars())
        return [s for s in mine if s.kpi_id in seen]

    def _rule(self, rule_id: int) -> AlertRule:
        with db.read_tx(self.engine) as connection:
            return alerts.get(connection, rule_id)
