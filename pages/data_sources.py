"""Data sources: list, add (tested on add), remove, and upload a CSV into SQLite."""

from __future__ import annotations

import pathlib
import re

import pandas as pd
import streamlit as st

import kpi_ui as ui

store = ui.get_store()

st.title("Data sources")
st.caption(
    "The databases KPI queries read from. Queries always run read-only; "
    "add any SQLAlchemy URL, or bring a spreadsheet as a CSV file."
)
ui.show_flash()

sources = []
with ui.friendly_errors():
    sources = store.data_sources()

if not sources:
    st.info(
        "No data sources yet. Add one below — for a local SQLite file, "
        "the URL looks like `sqlite:////full/path/to/file.db`.",
        icon=":material/database:",
    )
else:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "Name": s.name,
                    "URL": s.display_url,
                    "Added by": s.created_by,
                    "Added": ui.format_time(s.created_at),
                }
                for s in sources
            ]
        ),
        hide_index=True,
        width="stretch",
    )

add_tab, upload_tab, remove_tab = st.tabs(
    [
        ":material/add: Add a data source",
        ":material/upload_file: Upload a CSV",
        ":material/delete: Remove",
    ],
    key="ds_tabs",
)

with add_tab:
    errors = st.session_state.get("ds_add_errors", {})
    with st.form("ds_add", border=False):
        left, right = st.columns([1, 2])
        with left:
            name = st.text_input(
                "Name",
                key="ds_name",
                placeholder="sales_db",
                help="Letters, digits, '_', '-' and '.'.",
            )
            ui.field_error(errors, "name")
        with right:
            url = st.text_input(
                "SQLAlchemy URL",
                key="ds_url",
                placeholder="sqlite:////srv/data/sales.db  or  postgresql+psycopg://user:pw@host/db",
                help="The connection is tested before the data source is saved.",
            )
            ui.field_error(errors, "url")
        submitted = st.form_submit_button(
            "Test and add", type="primary", icon=":material/add_link:"
        )
    if submitted:
        actor = ui.require_actor("add a data source")
        if actor:
            try:
                with st.spinner("Testing the connection…"):
                    source = store.add_data_source(name, url, actor)
            except ui.KPIStoreError as error:
                st.session_state["ds_add_errors"] = ui.field_errors(error)
                ui.show_error(error)
            else:
                st.session_state.pop("ds_add_errors", None)
                ui.flash(f"Data source '{source.name}' added: connection works.")
                st.rerun()

with upload_tab:
    sqlite_sources = [s.name for s in sources if s.url.lower().startswith("sqlite")]
    if not sqlite_sources:
        st.info("Uploads go into a local SQLite data source; add one first.")
    else:
        st.caption(
            "The file becomes a new table that KPI queries can read. The first row must "
            "hold the column names; nothing is written if any row cannot be read."
        )
        target = st.selectbox("Into data source", sqlite_sources, key="up_source")
        upload = st.file_uploader("CSV file", type=["csv"], key="up_file")
        suggested = ""
        if upload is not None:
            stem = re.sub(r"[^A-Za-z0-9_]+", "_", pathlib.Path(upload.name).stem).strip("_")
            suggested = (stem if stem[:1].isalpha() else f"t_{stem}").lower()
        table = st.text_input(
            "New table name",
            value=suggested,
            key=f"up_table_{suggested}",
            help="Letters, digits and _; the table must not exist yet.",
        )
        upload_errors = st.session_state.get("up_errors", {})
        ui.field_error(upload_errors, "table", "file")
        if st.button(
            "Upload", type="primary", icon=":material/upload:", disabled=upload is None, key="up_go"
        ):
            actor = ui.require_actor("upload data")
            if actor and upload is not None:
                try:
                    with st.spinner("Reading the file…"):
                        rows = store.import_csv(target, table, upload, actor=actor)
                except ui.KPIStoreError as error:
                    st.session_state["up_errors"] = ui.field_errors(error)
                    ui.show_error(error)
                else:
                    st.session_state.pop("up_errors", None)
                    ui.flash(f"Uploaded {rows:,} rows into table '{table}' of '{target}'.")
                    st.rerun()

with remove_tab:
    if not sources:
        st.caption("Nothing to remove.")
    else:
        doomed = st.selectbox("Data source", [s.name for s in sources], key="ds_remove_pick")
        st.caption("A data source that KPIs still use cannot be removed.")
        confirm_key = "ds_remove_confirm"
        if st.button("Remove…", key="ds_remove", icon=":material/delete:"):
            st.session_state[confirm_key] = doomed
        if st.session_state.get(confirm_key) == doomed:
            st.warning(f"Remove data source '{doomed}'? Its data is not touched.")
            yes, no = st.columns([1, 6])
            if yes.button("Yes, remove", type="primary", key="ds_remove_yes"):
                actor = ui.require_actor("remove a data source")
                if actor:
                    st.session_state.pop(confirm_key, None)
                    try:
                        store.remove_data_source(doomed, actor)
                    except ui.KPIStoreError as error:
                        ui.show_error(error)
                    else:
                        ui.flash(f"Data source '{doomed}' removed.")
                        st.rerun()
            if no.button("Cancel", key="ds_remove_no"):
                st.session_state.pop(confirm_key, None)
                st.rerun()
