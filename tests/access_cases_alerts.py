"""Access cases of the alert rules (``store_alerts.AlertDesk``), merged into the role
matrix by ``test_access.py``: editors write rules, viewers read them and (un)subscribe
themselves."""

from __future__ import annotations

from access_world import BOSS, Case, World, names

from kpi_store.alert_records import AlertRule


def a_rule(w: World) -> AlertRule:
    """A fresh threshold rule on the world's KPI, made by the admin."""
    return w.store.create_rule(
        w.kpi, BOSS, name=f"Rule {next(names)}", condition="threshold", op="<", value=10
    )


def subscribed_rule(w: World) -> AlertRule:
    """A rule every role's person is subscribed to, to unsubscribe from."""
    rule = a_rule(w)
    for role in ("viewer", "runner", "editor", "admin"):
        w.store.subscribe(rule.id, f"{role}@example.com")
    return rule


CASES: dict[str, Case] = {
    "create_rule": Case(
        lambda w, a, _: w.store.create_rule(
            w.kpi, a, name=f"New {next(names)}", condition="off_target"
        )
    ),
    "update_rule": Case(lambda w, a, r: w.store.update_rule(r.id, {"value": 5}, a), a_rule),
    "delete_rule": Case(lambda w, a, r: w.store.delete_rule(r.id, a), a_rule),
    "mute_rule": Case(lambda w, a, r: w.store.mute_rule(r.id, None, a), a_rule),
    "rules": Case(lambda w, a, _: w.store.rules(w.kpi, actor=a), a_rule),
    "rule": Case(lambda w, a, r: w.store.rule(r.id, actor=a), a_rule),
    "rule_evaluations": Case(lambda w, a, r: w.store.rule_evaluations(r.id, actor=a), a_rule),
    "test_rule": Case(lambda w, a, r: w.store.test_rule(r.id, actor=a), a_rule),
    "alert_states": Case(lambda w, a, _: w.store.alert_states(actor=a), a_rule),
    "subscribe": Case(lambda w, a, r: w.store.subscribe(r.id, a), a_rule),
    "unsubscribe": Case(lambda w, a, r: w.store.unsubscribe(r.id, a), subscribed_rule),
    "subscriptions": Case(lambda w, a, _: w.store.subscriptions(actor=a)),
}
