"""Who is using the dashboard: a signed-in person (``KPI_AUTH=oidc``) or, in the
single-user demo mode, a typed name that every record marks as unverified.

``identify`` runs once per page view, before the navigation, and every click: so a person
deactivated or given another role meanwhile is held to it at once. Pages read the result
with ``viewer()`` and pass ``viewer().actor`` to the store, which enforces the rules.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass

import streamlit as st

from kpi_store import Execution, KPIStore, KPIStoreError, Role
from kpi_store.access import may_touch_run

from .app import process_store
from .links import Page
from .messages import md

ACTOR_KEY = "actor"
UNVERIFIED = " (unverified)"
NAME_COOKIE = "kpi_desk_name"
_VIEWER_KEY = "_kpi_viewer"
_SAVE_NAME_KEY = "_kpi_save_name"


@dataclass(frozen=True)
class Viewer:
    """The person a page acts for, as the store knows them on this click."""

    actor: str  # what the store records and checks ("" when nobody said who they are)
    label: str  # what the sidebar shows
    role: Role
    signed_in: bool

    def may(self, role: Role) -> bool:
        return self.role.includes(role)

    def may_cancel(self, run: Execution) -> bool:
        """Their own runs as a runner, everyone's as an admin (the store's rule)."""
        return may_touch_run(self.role, self.actor, run.requested_by)

    def refusal(self, role: Role, what: str) -> str | None:
        """A button's help when this person may not ``what``; None when they may."""
        if self.may(role):
            return None
        return f"Only people with the {role} role or above may {what} (yours is {self.role})."


def viewer() -> Viewer:
    """The person of this page view (set by ``identify``, which the app runs first)."""
    found = st.session_state.get(_VIEWER_KEY)
    return found if isinstance(found, Viewer) else _demo_viewer()


def current_actor() -> str:
    return viewer().actor


def require_actor(action: str = "do this") -> str | None:
    """Who acts, or a warning and ``None`` when nobody said who they are (demo mode)."""
    actor = current_actor()
    if not actor:
        st.warning(f"Enter your name in the sidebar to {action}.", icon=":material/badge:")
        return None
    return actor


def locked(role: Role, what: str) -> bool:
    """True, with a note saying why, when the viewer may not ``what`` (below ``role``)."""
    refusal = viewer().refusal(role, what)
    if refusal:
        st.caption(f":material/lock: {md(refusal)}")
    return refusal is not None


def unverified(name: str) -> str:
    """How a typed name is recorded in the demo mode: saying it was not verified."""
    return f"{name}{UNVERIFIED}" if name else ""


# -- who is it -----------------------------------------------------------------------------


def identify(store: KPIStore) -> Viewer | None:
    """The viewer of this click, or None when they must sign in (or were refused): then
    ``gate_page`` is what to show instead of the app."""
    if store.settings.auth_on:
        who = _signed_in_viewer(store)
    else:
        if ACTOR_KEY not in st.session_state:  # a new session: the name this browser kept
            st.session_state[ACTOR_KEY] = _remembered_name()
        who = _demo_viewer()
    if who is not None:
        st.session_state[_VIEWER_KEY] = who
    else:
        st.session_state.pop(_VIEWER_KEY, None)
    return who


def recheck(store: KPIStore) -> Viewer:
    """For a fragment, which reruns without the app: look the person up again, and rerun
    the whole app when they were deactivated or given another role meanwhile, so they are
    held to it at this click too."""
    before = viewer()
    now = identify(store)
    if now != before:
        st.rerun(scope="app")
    return before


def _demo_viewer() -> Viewer:
    name = str(st.session_state.get(ACTOR_KEY) or "").strip()
    return Viewer(actor=unverified(name), label=name, role=Role.ADMIN, signed_in=False)


def _signed_in_viewer(store: KPIStore) -> Viewer | None:
    if not st.user.is_logged_in:
        st.session_state["_kpi_refusal"] = ""
        return None
    email = str(st.user.get("email") or "")
    if str(st.user.get("email_verified", "")).strip().lower() == "false":
        st.session_state["_kpi_refusal"] = (
            f"Your sign-in provider has not verified the email {email}, so KPI Desk cannot "
            "tell that it is yours. Verify it with your provider, then sign in again."
        )
        return None
    try:
        person = store.sign_in(email, str(st.user.get("name") or ""))
    except KPIStoreError as refused:  # refused, deactivated, or no usable email claim
        st.session_state["_kpi_refusal"] = str(refused)
        return None
    return Viewer(actor=person.email, label=person.label, role=person.role, signed_in=True)


def gate_page() -> None:
    """What a visitor sees before the app: a sign-in button, or why they were refused."""
    refusal = str(st.session_state.get("_kpi_refusal") or "")
    st.title("KPI Desk")
    if refusal:
        st.error(md(refusal), icon=":material/block:")
        if st.button("Sign out", icon=":material/logout:"):
            st.logout()
        return
    st.write("Sign in to see your team's KPIs. Your organisation's sign-in page opens.")
    if st.button("Sign in", type="primary", icon=":material/login:"):
        st.login()


# -- the sidebar -----------------------------------------------------------------------------


def identity_sidebar(who: Viewer) -> None:
    """The signed-in person with Sign out, or the demo mode's name box and notice; then
    the link to their inbox with its unread count."""
    with st.sidebar:
        if who.signed_in:
            st.caption(f":material/account_circle: Signed in as {md(who.label)} · {who.role}")
            if st.button("Sign out", icon=":material/logout:", key="sign_out"):
                st.logout()
        else:
            _name_box()
        _inbox_link(who.actor)


def _inbox_link(actor: str) -> None:
    """The link "Inbox · N unread" (bold when N > 0), for someone who said who they are."""
    if not actor:
        return
    try:
        unread = process_store().unread_count(actor=actor)
    except KPIStoreError:  # the count is a convenience: the page says what went wrong
        return
    label = f"Inbox · {unread} unread"
    st.page_link(
        Page.INBOX.path,
        label=f"**{label}**" if unread else label,
        icon=":material/mark_email_unread:" if unread else ":material/inbox:",
        help="Notifications from the alert rules you subscribe to.",
    )


def _name_box() -> None:
    st.text_input(
        "Your name",
        key=ACTOR_KEY,
        placeholder="e.g. Alice Martin",
        help="Recorded, marked as not verified, as the author of every change and run.",
        max_chars=180,
        on_change=_ask_to_remember,
    )
    if st.session_state.pop(_SAVE_NAME_KEY, False):
        _remember_name(str(st.session_state.get(ACTOR_KEY) or "").strip())
    if not current_actor():
        st.caption(":orange[:material/badge: Enter your name to make changes or run KPIs.]")
    st.caption(
        ":material/lock_open: Sign-in is off: a single-user demo. Names are typed, not "
        "checked, and recorded as *(unverified)*. To require sign-in, set `KPI_AUTH=oidc` "
        "(see docs/DEPLOYMENT.md)."
    )


def _ask_to_remember() -> None:
    st.session_state[_SAVE_NAME_KEY] = True


def _remembered_name() -> str:
    try:
        raw = st.context.cookies.get(NAME_COOKIE)
    except Exception:  # no browser behind this run (a bare script run)
        return ""
    # Text only: AppTest stands a mock in for the browser's cookies.
    return urllib.parse.unquote(raw)[:180] if isinstance(raw, str) else ""


def _remember_name(name: str) -> None:
    """Keep the typed name in a cookie of this site, so a reload keeps it (the browser
    sends it with the next page load; Streamlit reads it from ``st.context.cookies``).
    The script runs in the page itself (no frame to load); the name inside it is
    percent-encoded, so it is plain ASCII without quotes or angle brackets."""
    value = json.dumps(urllib.parse.quote(name, safe=""))
    st.html(
        "<script>document.cookie = "
        f'"{NAME_COOKIE}=" + {value} + "; path=/; max-age=31536000; SameSite=Lax";'
        "</script>",
        unsafe_allow_javascript=True,
    )
