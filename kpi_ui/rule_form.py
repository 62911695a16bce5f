"""The form of an alert rule, new or changed: the KPI and the parameter set it watches
(the official number, or other values), the condition (off target, a threshold, a %
change), how many runs in a row fire and recover it, repeats while firing, whether no
data and errors notify, and the webhooks it calls. The store checks it all on save."""

from __future__ import annotations

from typing import Any

import streamlit as st

from kpi_store import KPI, KPIStore, KPIStoreError, Role
from kpi_store.alert_checks import MAX_RUNS
from kpi_store.alert_records import AlertRule
from kpi_store.alert_states import OPS, ConditionKind

from .actions import act
from .identity import Viewer
from .messages import md
from .param_sets import parameter_set_inputs
from .widgets import kpi_label, number_text

CONDITIONS = {
    ConditionKind.OFF_TARGET: "Off target (by the KPI's target, direction and tolerance)",
    ConditionKind.THRESHOLD: "The value compared with a number",
    ConditionKind.CHANGE: "The % change against the previous run (or period)",
}
OFFICIAL, NAMED = "official", "named"
WATCHES = {OFFICIAL: "The official number", NAMED: "Other parameter values"}
MAX_REPEAT_H = 366 * 24


def _period_dates(kpi: KPI) -> tuple[str, ...]:
    return (kpi.period.start, kpi.period.end) if kpi.period else ()


def rule_fields(
    kpi: KPI, prefix: str, rule: AlertRule | None, disabled: bool, hooks: list[str]
) -> dict[str, Any] | None:
    """The rule's settings as the store takes them (``create_rule`` names); None when a
    number typed cannot be read (said under its field)."""
    name = st.text_input(
        "Rule name",
        value=rule.name if rule else f"{kpi.name} off target",
        key=f"{prefix}_name",
        max_chars=200,
        disabled=disabled,
    )
    watch = st.radio(
        "Watches",
        list(WATCHES),
        index=1 if rule and not rule.official else 0,
        format_func=WATCHES.__getitem__,
        key=f"{prefix}_watch",
        horizontal=True,
        disabled=disabled,
        help="Each parameter set is a series of its own; the official number is what the "
        "Overview card shows. A period KPI's dates are left out: a rule watches every period.",
    )
    params = None
    if watch == NAMED:
        current = rule.params if rule and rule.params else {}
        params = parameter_set_inputs(
            kpi, prefix, current, skip=_period_dates(kpi), disabled=disabled
        )
    fields: dict[str, Any] = {"name": name, "params": params}
    condition = _condition_inputs(kpi, prefix, rule, disabled)
    if condition is None:
        return None
    fields.update(condition)
    fields.update(_policy_inputs(prefix, rule, disabled))
    chosen = [h for h in (rule.webhooks if rule else ()) if h in hooks]
    fields["webhooks"] = st.multiselect(
        "Also call these webhooks",
        hooks,
        default=chosen,
        key=f"{prefix}_hooks",
        disabled=disabled or not hooks,
        placeholder="None" if hooks else "No webhooks yet (an admin adds them under Channels)",
        help="Subscribers are told in their inbox (and by email when it is set up).",
    )
    return fields


def _condition_inputs(
    kpi: KPI, prefix: str, rule: AlertRule | None, disabled: bool
) -> dict[str, Any] | None:
    kinds = list(CONDITIONS)
    default = ConditionKind(rule.condition) if rule else kinds[0]
    if rule is None and kpi.target is None and not kpi.targets:
        default = ConditionKind.THRESHOLD
    kind = st.selectbox(
        "Condition",
        kinds,
        index=kinds.index(default),
        format_func=CONDITIONS.__getitem__,
        key=f"{prefix}_cond",
        disabled=disabled,
    )
    if kind == ConditionKind.OFF_TARGET:
        amber = st.toggle(
            "Near target (amber) counts too",
            value=bool(rule and rule.include_amber),
            key=f"{prefix}_amber",
            disabled=disabled,
        )
        return {"condition": str(kind), "op": None, "value": None, "include_amber": amber}
    left, right = st.columns([1, 2])
    ops = list(OPS)
    op = left.selectbox(
        "Operator",
        ops,
        index=ops.index(rule.op) if rule and rule.op in ops else ops.index("<"),
        key=f"{prefix}_op",
        disabled=disabled,
    )
    unit = "%" if kind == ConditionKind.CHANGE else kpi.unit
    typed = right.text_input(
        f"Value{f' ({md(unit)})' if unit else ''}",
        value=number_text(rule.value) if rule and rule.value is not None else "",
        key=f"{prefix}_value",
        placeholder="a number, e.g. 10 or -5.5",
        disabled=disabled,
    ).strip()
    try:
        value = float(typed.replace(",", "")) if typed else None
    except ValueError:
        right.markdown(f":red[:material/error: {md(typed)} is not a number.]")
        return None
    return {"condition": str(kind), "op": op, "value": value, "include_amber": False}


def _policy_inputs(prefix: str, rule: AlertRule | None, disabled: bool) -> dict[str, Any]:
    c1, c2, c3 = st.columns(3)
    for_runs = c1.number_input(
        "Fire after runs in a row",
        min_value=1,
        max_value=MAX_RUNS,
        value=rule.for_runs if rule else 1,
        key=f"{prefix}_for",
        disabled=disabled,
        help="Pending until the condition holds this many runs in a row.",
    )
    recover_runs = c2.number_input(
        "Recover after good runs in a row",
        min_value=1,
        max_value=MAX_RUNS,
        value=rule.recover_runs if rule else 1,
        key=f"{prefix}_recover",
        disabled=disabled,
    )
    repeat_s = rule.renotify_after_s if rule else None
    repeat_h = c3.number_input(
        "Repeat while firing, every (hours)",
        min_value=0.0,
        max_value=float(MAX_REPEAT_H),
        value=(repeat_s or 0.0) / 3600,
        step=1.0,
        key=f"{prefix}_repeat",
        disabled=disabled,
        help="0: tell once when it starts firing, and when it recovers.",
    )
    t1, t2 = st.columns(2)
    no_data = t1.toggle(
        "Notify when there is no data",
        value=bool(rule and rule.notify_on_no_data),
        key=f"{prefix}_nodata",
        disabled=disabled,
        help="No rows or an empty value: never read as 0.",
    )
    on_error = t2.toggle(
        "Notify when the run fails",
        value=rule.notify_on_error if rule else True,
        key=f"{prefix}_error",
        disabled=disabled,
    )
    return {
        "for_runs": int(for_runs),
        "recover_runs": int(recover_runs),
        "renotify_after_s": float(repeat_h) * 3600 if repeat_h else None,
        "notify_on_no_data": no_data,
        "notify_on_error": on_error,
    }


def webhook_names(store: KPIStore, me: Viewer) -> list[str]:
    try:
        return [w.name for w in store.webhooks(actor=me.actor)]
    except KPIStoreError:  # the form works without them
        return []


def new_rule_form(store: KPIStore, me: Viewer, kpis: dict[int, KPI], focus: int | None) -> None:
    refusal = me.refusal(Role.EDITOR, "create alert rules")
    active = [k.id for k in kpis.values() if k.status != "archived"]
    if not active:
        st.caption("There is no active KPI to watch.")
        return
    kpi_id = st.selectbox(
        "KPI",
        active,
        index=active.index(focus) if focus in active else 0,
        format_func=lambda i: kpi_label(kpis[i]),
        key="ar_new_kpi",
        disabled=bool(refusal),
    )
    kpi = kpis[kpi_id]
    hooks = webhook_names(store, me)
    fields = rule_fields(kpi, f"ar_new_{kpi.id}", None, bool(refusal), hooks)
    subscribe = st.toggle(
        "Subscribe me", value=True, key="ar_new_subscribe", disabled=bool(refusal)
    )
    if st.button(
        "Create rule",
        type="primary",
        icon=":material/add_alert:",
        key="ar_create",
        disabled=bool(refusal) or fields is None,
        help=refusal,
    ):
        assert fields is not None

        def create(actor: str) -> AlertRule:
            rule = store.create_rule(kpi.id, actor, **fields)
            return store.subscribe(rule.id, actor) if subscribe else rule

        act(
            "create an alert rule",
            create,
            done=lambda r: (
                f"Alert rule '{md(r.name)}' created on {md(kpi.name)}: "
                f"{md(r.describe(kpi.unit))}." + (" You are subscribed." if subscribe else "")
            ),
        )


def edit_rule_form(store: KPIStore, me: Viewer, rule: AlertRule, kpi: KPI) -> None:
    refusal = me.refusal(Role.EDITOR, "change alert rules")
    prefix = f"ar_edit_{rule.id}"
    fields = rule_fields(kpi, prefix, rule, bool(refusal), webhook_names(store, me))
    active = st.toggle("Active", value=rule.active, key=f"{prefix}_active", disabled=bool(refusal))
    st.caption("Changing the condition, parameters or run counts starts the rule again at OK.")
    if st.button(
        "Save rule",
        type="primary",
        icon=":material/save:",
        key=f"{prefix}_save",
        disabled=bool(refusal) or fields is None,
        help=refusal,
    ):
        assert fields is not None
        changes = {**fields, "active": active}
        act(
            "change an alert rule",
            lambda actor: store.update_rule(rule.id, changes, actor),
            done=lambda r: f"Alert rule '{md(r.name)}' saved.",
        )
