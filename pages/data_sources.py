"""Data sources: list, add (tested on add), remove, and upload a CSV into SQLite."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable

import pandas as pd
import streamlit as st

import kpi_ui as ui

store = ui.get_store()
me = ui.viewer()

st.title("Data sources")
st.caption(
    "The databases KPI queries read from. Queries always run read-only; "
    "add any SQLAlchemy URL, or bring a spreadsheet as a CSV file."
)
ui.show_flash()

sources: list[ui.DataSource] = []
upload_targets: list[str] = []
with ui.friendly_errors():
    sources = store.data_sources(actor=me.actor)
    if me.may(ui.Role.ADMIN):
        upload_targets = store.upload_targets(actor=me.actor)

if not sources:
    st.info(
        "No data sources yet. Add one below — for a local SQLite file, "
        "the URL looks like `sqlite:////full/path/to/file.db`.",
        icon=":material/database:",
    )
else:
    rows = [
        {
            "Name": s.name,
            "URL": s.display_url,
            "Added by": s.created_by,
            "Added": ui.format_time(s.created_at),
        }
        for s in sources
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

if ui.locked(ui.Role.ADMIN, "add, fill or remove data sources"):
    st.stop()

add_tab, upload_tab, remove_tab = st.tabs(
    [
        ":material/add: Add a data source",
        ":material/upload_file: Upload a CSV",
        ":material/delete: Remove",
    ],
    key="ds_tabs",
)


def remember_fields(slot: str) -> Callable[[ui.KPIStoreError], None]:
    """An ``on_error`` for ``ui.act``: field errors kept for the form, the message shown."""

    def on_error(error: ui.KPIStoreError) -> None:
        st.session_state[slot] = ui.field_errors(error)
        ui.show_error(error)

    return on_error


def add_form() -> None:
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
    if not submitted:
        return

    def added(source: ui.DataSource) -> str:
        st.session_state.pop("ds_add_errors", None)
        return f"Data source '{ui.md(source.name)}' added: connection works."

    ui.act(
        "add a data source",
        lambda actor: store.add_data_source(name, url, actor),
        spinner="Testing the connection…",
        done=added,
        on_error=remember_fields("ds_add_errors"),
    )


def suggested_table(file_name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", pathlib.Path(file_name).stem).strip("_")
    return (stem if stem[:1].isalpha() else f"t_{stem}").lower()


def target_tables(target: str, reload: bool = False) -> list[ui.TableInfo]:
    """The tables of an upload target, read once (and again after an upload)."""
    known: dict[str, list[ui.TableInfo]] = st.session_state.setdefault("up_schemas", {})
    if reload or target not in known:
        known[target] = []
        with ui.friendly_errors():
            known[target] = store.source_schema(target, actor=me.actor)
    return known[target]


def table_named(tables: list[ui.TableInfo], name: str) -> ui.TableInfo | None:
    """The table or view of the default schema named ``name`` in any case (as SQLite
    compares names)."""
    wanted = name.strip().lower()
    return next((t for t in tables if t.schema_name is None and t.name.lower() == wanted), None)


def columns_frame(table: ui.TableInfo) -> pd.DataFrame:
    return pd.DataFrame(
        [{"Column": c.name, "Type": c.type or ui.MISSING} for c in table.columns],
        columns=["Column", "Type"],
    )


def rows_words(table: ui.TableInfo) -> str:
    if table.row_count is None:
        return "rows not counted"
    return f"{ui.format_number(table.row_count)} rows"


def upload_form() -> None:
    if not upload_targets:
        st.info("Uploads go into a local SQLite data source; add one first.")
        return
    st.caption(
        "The file becomes a table that KPI queries can read. The first row must hold the "
        "column names; nothing is written if any row cannot be read."
    )
    target = st.selectbox("Into data source", upload_targets, key="up_source")
    upload = st.file_uploader("CSV file", type=["csv"], key="up_file")
    suggested = suggested_table(upload.name) if upload is not None else ""
    table = st.text_input(
        "New table name",
        value=suggested,
        key=f"up_table_{suggested}",
        help="Letters, digits and _. A table of that name can be replaced.",
    )
    ui.field_error(st.session_state.get("up_errors", {}), "table", "file")
    replace = replace_choice(target, table)
    if st.button(
        "Replace and upload" if replace else "Upload",
        type="primary",
        icon=":material/upload:",
        disabled=upload is None,
        key="up_go",
    ):

        def uploaded(rows: int) -> str:
            st.session_state.pop("up_errors", None)
            st.session_state["up_last"] = (target, table.strip())
            target_tables(target, reload=True)
            verb = "Replaced table" if replace else "Uploaded"
            where = f"'{ui.md(table.strip())}' of '{ui.md(target)}'"
            return (
                f"{verb} {where} with {rows:,} rows."
                if replace
                else f"Uploaded {rows:,} rows into table {where}."
            )

        def refused(error: ui.KPIStoreError) -> None:
            remember_fields("up_errors")(error)
            target_tables(target, reload=True)  # someone may have made the table meanwhile

        ui.act(
            "upload data",
            lambda actor: store.import_csv(target, table, upload, actor=actor, replace=replace),
            spinner="Reading the file…",
            done=uploaded,
            on_error=refused,
        )
    last_upload()


def replace_choice(target: str, table: str) -> bool:
    """When the table name is taken in ``target``: what is there, and whether to replace it
    (a view never is)."""
    existing = table_named(target_tables(target), table) if target and table.strip() else None
    if existing is None:
        return False
    if existing.kind == "view":
        st.warning(
            f"'{ui.md(existing.name)}' is a view in '{ui.md(target)}': choose another name.",
            icon=":material/warning:",
        )
        return False
    st.warning(
        f"Table '{ui.md(existing.name)}' already exists in '{ui.md(target)}' "
        f"({rows_words(existing)}; its columns below). Upload into a new name, or "
        "replace it.",
        icon=":material/warning:",
    )
    st.dataframe(columns_frame(existing), hide_index=True, width="content")
    return st.checkbox(
        f"Replace table '{ui.md(existing.name)}': its rows and columns give way to the "
        "file's (KPIs reading it read the new table)",
        key=f"up_replace_{target}_{existing.name}",
    )


def last_upload() -> None:
    """The table the last upload wrote: its columns and types, as the source has them."""
    last = st.session_state.get("up_last")
    if not last:
        return
    target, name = last
    found = table_named(target_tables(target), name) if target in upload_targets else None
    if found is None:
        return
    with st.container(border=True):
        st.markdown(f"**Table '{ui.md(found.name)}' in '{ui.md(target)}'** · {rows_words(found)}")
        st.dataframe(columns_frame(found), hide_index=True, width="stretch")
        st.caption("Use it in a KPI's SQL by this name:")
        st.code(found.sql_name, language="sql")


def remove_form() -> None:
    if not sources:
        st.caption("Nothing to remove.")
        return
    doomed = st.selectbox("Data source", [s.name for s in sources], key="ds_remove_pick")
    st.caption("A data source that KPIs still use cannot be removed.")
    if st.button("Remove…", key="ds_remove", icon=":material/delete:"):
        ui.ask_to_confirm("ds_remove", doomed)
    question = f"Remove data source '{ui.md(doomed)}'? Its data is not touched."
    if ui.confirmed("ds_remove", doomed, question, "Yes, remove"):
        ui.act(
            "remove a data source",
            lambda actor: store.remove_data_source(doomed, actor),
            done=f"Data source '{ui.md(doomed)}' removed.",
        )


with add_tab:
    add_form()
with upload_tab:
    upload_form()
with remove_tab:
    remove_form()
