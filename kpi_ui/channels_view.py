"""The Channels tab of the Schedules & alerts page: whether email is set up, each webhook
with its health (a failing one in red with its last error), and, for admins, adding a
webhook (its signing secret shown once), removing one and sending a test."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from kpi_store import KPIStore, Role
from kpi_store.formats import MISSING, format_time
from kpi_store.notification_records import ChannelHealth, WebhookSaved

from .actions import act, ask_to_confirm, confirmed
from .identity import Viewer
from .messages import friendly_errors, md

SECRET_KEY, REMOVE_KEY = "ch_secret", "ch_remove"
FAILING_STYLE = "background-color: #fee2e2; color: #991b1b"


def channels_tab(store: KPIStore, me: Viewer) -> None:
    health: list[ChannelHealth] = []
    with friendly_errors():
        health = store.channel_health(actor=me.actor)
    email = next((h for h in health if h.channel == "email"), None)
    hooks = [h for h in health if h.channel == "webhook"]
    email_status(email)
    show_new_secret()
    st.markdown("**Webhooks** · a signed JSON POST for Slack, Teams or anything else")
    webhook_table(hooks)
    for hook in (h for h in hooks if h.failing):
        st.error(
            md(f"Webhook '{hook.name}' is failing. Last error: {hook.last_error or 'unknown'}"),
            icon=":material/sync_problem:",
        )
    refusal = me.refusal(Role.ADMIN, "add, remove or test webhooks")
    if refusal:
        st.caption(f":material/lock: {md(refusal)}")
    with st.expander("Add a webhook", icon=":material/add_link:", expanded=not hooks):
        add_webhook_form(store, refusal)
    if hooks:
        manage_webhook(store, [h.name for h in hooks], refusal)
    st.divider()
    st.caption("See a notification arrive in your own inbox (and by email, when it is set up).")
    if st.button("Send a test to my inbox", icon=":material/inbox:", key="ch_test_me"):
        act(
            "send a test notification",
            lambda actor: store.send_test_notification(actor),
            done="Test sent to your inbox.",
        )


def email_status(email: ChannelHealth | None) -> None:
    if email is None or not email.configured:
        st.info(
            "Email is off: set `KPI_SMTP_HOST` (and the other `KPI_SMTP_*` settings) to "
            "send alert emails. Subscribers are still told in their inbox.",
            icon=":material/mail_lock:",
        )
    elif email.failing:
        st.error(
            md(f"Email is failing ({email.detail}). Last error: {email.last_error or 'unknown'}"),
            icon=":material/mail:",
        )
    else:
        st.success(
            md(f"Email is on: {email.detail} · {email.pending} waiting to be sent."),
            icon=":material/mail:",
        )


def _health_word(hook: ChannelHealth) -> str:
    if hook.failing:
        return "failing"
    if not hook.active:
        return "paused"
    return "ok" if hook.last_success_at else "not used yet"


def webhook_table(hooks: list[ChannelHealth]) -> None:
    if not hooks:
        st.caption("No webhooks yet.")
        return
    rows = [
        {
            "Name": h.name,
            "Address": h.detail,
            "Health": _health_word(h),
            "Last error": h.last_error or "",
            "Last failure": format_time(h.last_failure_at, MISSING),
            "Last success": format_time(h.last_success_at, MISSING),
            "Waiting": h.pending,
        }
        for h in hooks
    ]
    frame = pd.DataFrame(rows)

    def red_when_failing(row: pd.Series) -> list[str]:
        return [FAILING_STYLE if row["Health"] == "failing" else "" for _ in row]

    st.dataframe(
        frame.style.apply(red_when_failing, axis=1),
        hide_index=True,
        width="stretch",
        key="ch_table",
    )


def show_new_secret() -> None:
    """The secret of the webhook just added, shown this once (gone at the next click)."""
    saved = st.session_state.pop(SECRET_KEY, None)
    if not isinstance(saved, WebhookSaved) or not saved.secret:
        return
    st.warning(
        md(
            f"Webhook '{saved.channel.name}' added. Its signing secret is below: copy it now "
            "into the receiving end (it checks the X-KPI-Desk-Signature header); it is not "
            "shown again."
        ),
        icon=":material/key:",
    )
    st.code(saved.secret, language=None)


def add_webhook_form(store: KPIStore, refusal: str | None) -> None:
    with st.form("ch_add", clear_on_submit=True, border=False):
        left, right = st.columns([1, 2])
        name = left.text_input(
            "Webhook name", key="ch_name", placeholder="team-chat", disabled=bool(refusal)
        )
        url = right.text_input(
            "Address (URL)",
            key="ch_url",
            placeholder="https://hooks.example.com/services/…",
            disabled=bool(refusal),
            help="http or https. The path is kept secret: lists show only scheme and host.",
        )
        submitted = st.form_submit_button(
            "Add webhook",
            type="primary",
            icon=":material/add_link:",
            disabled=bool(refusal),
            help=refusal,
        )
    if not submitted:
        return

    def added(saved: WebhookSaved) -> str:
        st.session_state[SECRET_KEY] = saved
        return ""

    act("add a webhook", lambda actor: store.add_webhook(name, url, actor), done=added)


def manage_webhook(store: KPIStore, names: list[str], refusal: str | None) -> None:
    left, test, remove = st.columns([2, 1, 1], vertical_alignment="bottom")
    name = left.selectbox("Webhook", names, key="ch_pick", disabled=bool(refusal))
    if test.button(
        "Send a test", icon=":material/send:", key="ch_test", disabled=bool(refusal), help=refusal
    ):
        act(
            "send a test",
            lambda actor: store.send_test_notification(actor, webhook=name),
            done=f"Test queued for '{md(name)}': a worker sends it; its health shows here.",
        )
    if remove.button(
        "Remove",
        icon=":material/link_off:",
        key="ch_ask_remove",
        disabled=bool(refusal),
        help=refusal,
    ):
        ask_to_confirm(REMOVE_KEY, name)
    question = f"Remove the webhook '{md(name)}'? Rules naming it skip it from now on."
    if confirmed(REMOVE_KEY, name, question, "Remove the webhook"):
        act(
            "remove a webhook",
            lambda actor: store.remove_webhook(name, actor),
            done=f"Webhook '{md(name)}' removed.",
        )
