"""People: who may sign in, their role, the data sources they are limited to (admins)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import kpi_ui as ui

store = ui.get_store()
me = ui.viewer()

ROLE_HELP = (
    "viewer: sees KPIs, runs, rows and history · runner: also runs KPIs, cancels their own "
    "runs and exports · editor: also creates, edits, archives and restores KPIs · admin: "
    "also data sources, uploads, deleting, people and the audit chain"
)

st.title("People")
st.caption("Who may sign in and what they may do. Changes hold from their next click.")
ui.show_flash()
if ui.locked(ui.Role.ADMIN, "manage people"):
    st.stop()
if not store.settings.auth_on:
    st.info(
        "Sign-in is off (`KPI_AUTH=off`): everyone acts as an unverified name and roles are "
        "not enforced. You can prepare people and roles here before turning sign-in on.",
        icon=":material/lock_open:",
    )

everyone: list[ui.Person] = []
source_names: list[str] = []
with ui.friendly_errors():
    everyone = store.people(actor=me.actor)
    source_names = [s.name for s in store.data_sources(actor=me.actor)]

if everyone:
    rows = [
        {
            "Email": p.email,
            "Name": p.display_name,
            "Role": p.role,
            "Active": p.active,
            "Data sources": ", ".join(p.data_sources) or "all",
            "Last seen": ui.time_ago(p.last_seen_at) if p.last_seen_at else ui.MISSING,
            "Added": ui.format_time(p.created_at),
        }
        for p in everyone
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
else:
    st.caption("Nobody yet: people appear at their first sign-in, or add them below.")

edit_tab, add_tab = st.tabs([":material/manage_accounts: Change", ":material/person_add: Add"])


def change_form() -> None:
    if not everyone:
        st.caption("There is nobody to change yet.")
        return
    by_email = {p.email: p for p in everyone}
    email = st.selectbox(
        "Person", list(by_email), format_func=lambda e: by_email[e].label, key="pp_who"
    )
    person = by_email[email]
    with st.form(f"pp_change_{email}", border=False):
        role = st.selectbox(
            "Role", list(ui.Role), index=list(ui.Role).index(person.role), help=ROLE_HELP
        )
        scope = st.multiselect(
            "Limited to these data sources",
            sorted(set(source_names) | set(person.data_sources)),
            default=list(person.data_sources),
            placeholder="All data sources",
            help="Empty: every data source. Otherwise they see, run and edit only KPIs on these.",
        )
        active = st.toggle("Active", value=person.active, help="Off: locked out at once.")
        if not st.form_submit_button("Save", type="primary", icon=":material/save:"):
            return
    ui.act(
        "change a person",
        lambda actor: store.update_person(
            email, actor, role=role, data_sources=scope, active=active
        ),
        done=lambda p: (
            f"Saved {ui.md(p.label)}: {p.role}, {'active' if p.active else 'deactivated'}."
        ),
    )


def add_form() -> None:
    with st.form("pp_add", clear_on_submit=True, border=False):
        c1, c2 = st.columns(2)
        email = c1.text_input("Email", placeholder="name@example.com")
        name = c2.text_input("Name", placeholder="as people know them")
        role = st.selectbox("Role", list(ui.Role), help=ROLE_HELP)
        scope = st.multiselect(
            "Limited to these data sources", source_names, placeholder="All data sources"
        )
        if not st.form_submit_button("Add person", type="primary", icon=":material/person_add:"):
            return
    ui.act(
        "add a person",
        lambda actor: store.add_person(
            email, actor, display_name=name, role=role, data_sources=scope
        ),
        done=lambda p: f"Added {ui.md(p.label)} as {p.role}.",
    )


with edit_tab:
    change_form()
with add_tab:
    add_form()
