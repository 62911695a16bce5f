"""KPIs: the searchable catalog (click a row to open a KPI) and the create / edit form.

The form has every field of a definition, typed parameter rows, a SQL editor with the
data source's tables and columns beside it and a "test query" preview, a change note and
the store's field-level error messages. An edit is saved against the version it was
opened at: if someone saved meanwhile, both versions are shown side by side and nothing
is overwritten; the edit can then go on top of the newer version when the two changed
different fields. A link to a KPI that does not exist (``?kpi=9999``) says so.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

import kpi_ui as ui

store = ui.get_store()
me = ui.viewer()

PARAM_TYPES = list(ui.ParamType)
TYPE_LABELS = ui.PARAM_TYPE_LABELS
AGGREGATIONS = list(ui.Aggregation)
AGG_LABELS = ui.AGGREGATION_LABELS
DIRECTIONS = list(ui.Direction)
DIRECTION_LABELS = ui.DIRECTION_LABELS
LAST_KPI = "kpi_last_opened"  # the KPI last open here: the History page opens on it
Spec = dict[str, Any]
Errors = dict[str, str]

st.title("KPIs")
st.caption("Define what each KPI means and how it is computed. Every save is a new version.")
ui.show_flash()

# -- catalog ------------------------------------------------------------------------------

all_kpis: list[ui.KPI] = []
with ui.friendly_errors():
    all_kpis = store.list_kpis(include_archived=True, actor=me.actor)
all_tags = sorted({t for k in all_kpis for t in k.tags})

with st.container(border=True):
    c1, c2, c3 = st.columns([3, 2, 1], vertical_alignment="bottom")
    search = c1.text_input(
        "Search",
        key="kp_search",
        placeholder="name, description, owner, tag…",
        icon=":material/search:",
    )
    tag = c2.selectbox("Tag", ["All tags", *all_tags], key="kp_tag")
    archived = c3.toggle("Show archived", key="kp_archived")

listed: list[ui.KPI] = []
with ui.friendly_errors():
    listed = store.list_kpis(
        search=search or None,
        tag=None if tag == "All tags" else tag,
        include_archived=archived,
        actor=me.actor,
    )


def catalog_table(kpis: list[ui.KPI]) -> None:
    """The catalogue; clicking a row opens that KPI below (it sets ``kp_open``)."""
    rows = [
        {
            "ID": k.id,
            "Name": k.name,
            "Owner": k.owner,
            "Tags": ", ".join(k.tags),
            "Target": ui.format_value(k.target, k.unit) if k.target is not None else "",
            "Version": k.version,
            "Status": str(k.status),
            "Updated": ui.format_time(k.updated_at),
            "By": k.updated_by,
        }
        for k in kpis
    ]
    event = st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={
            "ID": st.column_config.NumberColumn(width="small"),
            "Version": st.column_config.NumberColumn(width="small"),
        },
        key="kp_catalog",
        on_select="rerun",
        selection_mode="single-row",
    )
    st.caption("Click a row to open that KPI below.")
    # The rows picked refer to the table as it was shown when the click happened: the
    # ids of the previous run. A click opens its KPI once; a later search that shifts
    # the rows under a selection that stayed does not open another one.
    shown_before: list[int] = st.session_state.get("kp_catalog_ids", [])
    picked = tuple(event.selection.rows) if event is not None else ()
    if picked != st.session_state.get("kp_catalog_picked", ()):
        st.session_state["kp_catalog_picked"] = picked
        if picked and picked[0] < len(shown_before):
            st.session_state["kp_open"] = shown_before[picked[0]]
            ui.set_query_param("kpi", shown_before[picked[0]])
    st.session_state["kp_catalog_ids"] = [k.id for k in kpis]


if not all_kpis:
    st.info("No KPIs yet. Create the first one with the form below.", icon=":material/lightbulb:")
elif not listed:
    st.info("No KPI matches this search.", icon=":material/search_off:")
else:
    catalog_table(listed)

by_id = {k.id: k for k in all_kpis}
options: list[int | None] = [None, *(k.id for k in listed)]


def open_from_url_instead(choice: int | None) -> None:
    """Leave a link to an unknown KPI for ``choice`` (a KPI, or None: a new one)."""
    st.session_state["kp_open"] = choice
    ui.open_on_rerun("kpi", choice)


def unknown_kpi_in_url() -> None:
    """A link naming a KPI that is not there (deleted, mistyped, or on a data source the
    viewer may not use): say so and stay on it (the URL is kept) until they choose."""
    raw = str(st.query_params.get("kpi", ""))
    st.error(
        f"There is no KPI with id {ui.md(raw)}: it may have been deleted, or it is on a "
        "data source you may not use. Choose a KPI in the catalog or below.",
        icon=":material/search_off:",
    )
    choices = [k.id for k in listed] or list(by_id)
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    if choices:
        left.selectbox(
            "Open a KPI",
            choices,
            index=None,
            placeholder="Choose a KPI",
            format_func=lambda i: f"{ui.kpi_label(by_id[i])} · #{i}",
            key="kp_open_instead",
            on_change=lambda: open_from_url_instead(st.session_state.get("kp_open_instead")),
        )
    right.button(
        "New KPI",
        icon=":material/add_circle:",
        key="kp_new_instead",
        on_click=open_from_url_instead,
        args=(None,),
    )
    st.stop()


url_kpi = st.query_params.get("kpi")
if url_kpi not in (None, "") and ui.query_int("kpi") not in by_id:
    unknown_kpi_in_url()
ui.follow_query_param("kp_open", "kpi", [None, *by_id])
opened = st.session_state.get("kp_open")
if opened is not None and opened not in options and opened in by_id:
    options.append(opened)
if st.session_state.get("kp_open") not in options:
    st.session_state["kp_open"] = None
selected = st.selectbox(
    "Open a KPI",
    options,
    format_func=lambda i: "➕ New KPI" if i is None else f"{ui.kpi_label(by_id[i])} · #{i}",
    key="kp_open",
)
ui.set_query_param("kpi", selected)
if selected is not None:
    st.session_state[LAST_KPI] = selected


# -- form sections ------------------------------------------------------------------------


def _default_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def parameter_row(key: str, start: ui.ParameterSpec | None) -> tuple[Spec, bool]:
    """One editable parameter; returns its dict and whether "remove" was pressed."""
    c = st.columns([2, 2, 2, 3, 3, 1], vertical_alignment="bottom")
    name = c[0].text_input(
        "Name", value=start.name if start else "", key=f"{key}_name", placeholder="start_date"
    )
    ptype = c[1].selectbox(
        "Type",
        PARAM_TYPES,
        index=PARAM_TYPES.index(start.type) if start else 0,
        format_func=lambda t: TYPE_LABELS[t],
        key=f"{key}_type",
    )
    default = c[2].text_input(
        "Default",
        value=_default_text(start.default) if start else "",
        key=f"{key}_default",
        placeholder="2025-01-01" if ptype == ui.ParamType.DATE else "",
    )
    choices = c[3].text_input(
        "Choices",
        help="Optional: the only values allowed, separated by commas.",
        value=", ".join(_default_text(x) for x in start.choices) if start and start.choices else "",
        key=f"{key}_choices",
    )
    label = c[4].text_input(
        "Label shown to users", value=(start.label or "") if start else "", key=f"{key}_label"
    )
    remove = c[5].button(
        "", icon=":material/delete:", key=f"{key}_remove", help="Remove this parameter"
    )
    spec = {
        "name": name.strip(),
        "type": ptype,
        "default": default.strip() or None,
        "choices": [x.strip() for x in choices.split(",") if x.strip()] or None,
        "label": label.strip() or None,
    }
    return spec, remove


def parameter_rows(prefix: str, initial: list[ui.ParameterSpec], errors: Errors) -> list[Spec]:
    """Editable parameter rows; returns the parameter dicts in row order."""
    rows_key = f"{prefix}_rows"
    if rows_key not in st.session_state:
        st.session_state[rows_key] = list(range(len(initial)))
    rows: list[int] = st.session_state[rows_key]
    result = []
    if not rows:
        st.caption("No parameters. Add one for each `:name` used in the SQL.")
    for position, rid in enumerate(rows):
        with st.container(border=True):
            spec, remove = parameter_row(
                f"{prefix}_p{rid}", initial[rid] if rid < len(initial) else None
            )
            if remove:
                rows.remove(rid)
                st.rerun()
            ui.field_error(errors, f"parameters[{position}]")
        result.append(spec)
    if st.button("Add parameter", icon=":material/add:", key=f"{prefix}_add"):
        rows.append(max([*rows, len(initial) - 1]) + 1)
        st.rerun()
    ui.field_error(errors, "parameters")
    return result


def identity_section(prefix: str, kpi: ui.KPI | None, errors: Errors) -> Spec:
    """Name, owner, description, plain-words definition and tags."""
    spec: Spec = {}
    st.markdown("### What it means")
    c1, c2 = st.columns([2, 1])
    with c1:
        spec["name"] = st.text_input(
            "Name",
            value=kpi.name if kpi else "",
            key=f"{prefix}_name",
            max_chars=200,
            placeholder="Monthly revenue",
        )
        ui.field_error(errors, "name")
    with c2:
        spec["owner"] = st.text_input(
            "Owner", value=kpi.owner if kpi else "", key=f"{prefix}_owner", placeholder="Finance"
        )
        ui.field_error(errors, "owner")
    spec["description"] = st.text_input(
        "Short description", value=kpi.description if kpi else "", key=f"{prefix}_description"
    )
    ui.field_error(errors, "description")
    spec["nl_definition"] = st.text_area(
        "Definition in plain words",
        value=kpi.nl_definition if kpi else "",
        key=f"{prefix}_nl",
        height=90,
        help="What exactly is counted, for readers who do not read SQL.",
    )
    ui.field_error(errors, "nl_definition")
    tags = st.text_input(
        "Tags (comma-separated)",
        value=", ".join(kpi.tags) if kpi else "",
        key=f"{prefix}_tags",
        placeholder="sales, finance",
    )
    spec["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
    ui.field_error(errors, "tags")
    return spec


def query_section(prefix: str, kpi: ui.KPI | None, errors: Errors) -> Spec:
    """The data source and the SQL, with the source's tables and columns beside it."""
    sources: list[str] = []
    with ui.friendly_errors():
        sources = [s.name for s in store.data_sources(actor=me.actor)]
    st.markdown("### How it is computed")
    if not sources:
        st.warning("There are no data sources yet.", icon=":material/database:")
        ui.link(ui.Page.DATA_SOURCES, "Add a data source", ":material/database:")
    index = sources.index(kpi.data_source) if kpi and kpi.data_source in sources else 0
    editor, browser = st.columns([3, 2])
    with editor:
        spec: Spec = {
            "data_source": st.selectbox(
                "Data source", sources, index=index if sources else None, key=f"{prefix}_source"
            )
        }
        ui.field_error(errors, "data_source")
        spec["sql"] = st.text_area(
            "SQL",
            value=kpi.sql if kpi else "",
            key=f"{prefix}_sql",
            height=260,
            placeholder="SELECT SUM(amount) AS revenue FROM orders WHERE order_date >= :start_date",
            help="One read-only query. Use :name for parameters.",
        )
        ui.field_error(errors, "sql")
    with browser:
        schema_browser(prefix, spec["data_source"])
    return spec


# -- the schema browser ---------------------------------------------------------------------

SCHEMAS = "kp_schemas"  # {data source: its tables, or the message why they cannot be read}


def source_tables(source: str, reload: bool = False) -> list[ui.TableInfo] | str:
    """The source's tables and views, read once per session (``reload`` reads again)."""
    known: dict[str, list[ui.TableInfo] | str] = st.session_state.setdefault(SCHEMAS, {})
    if reload or source not in known:
        try:
            known[source] = store.source_schema(source, actor=me.actor)
        except ui.KPIStoreError as error:
            known[source] = str(error)
    return known[source]


def add_to_sql(sql_key: str, name: str) -> None:
    """Add ``name`` at the end of the SQL (a text box has no cursor Streamlit can reach)."""
    sql = str(st.session_state.get(sql_key) or "")
    gap = "" if not sql or sql[-1] in " \n\t(," else " "
    st.session_state[sql_key] = f"{sql}{gap}{name}"


def rows_text(table: ui.TableInfo) -> str:
    if table.kind == "view":
        return "view"
    if table.row_count is None:
        return "table"
    about = "about " if table.row_count_estimated else ""
    return f"{about}{ui.format_number(table.row_count)} rows"


def schema_browser(prefix: str, source: str | None) -> None:
    """The data source's tables and views, their columns and types; a name can be added
    to the SQL. Read only while the panel is open (and then once per session)."""
    panel = st.expander(
        "Tables and columns",
        icon=":material/table_chart:",
        key=f"{prefix}_schema",
        on_change="rerun",
    )
    with panel:
        if not panel.open:
            return
        if not source:
            st.caption("Choose a data source to see its tables.")
            return
        reload = st.button(
            "Read again", icon=":material/refresh:", key=f"{prefix}_schema_reload", type="tertiary"
        )
        tables = source_tables(source, reload)
        if isinstance(tables, str):
            st.error(ui.md(tables), icon=":material/error:")
            return
        if not tables:
            st.caption(f"The data source '{ui.md(source)}' has no tables or views.")
            return
        by_name = {t.sql_name: t for t in tables}
        name = st.selectbox(
            "Table or view",
            list(by_name),
            format_func=lambda n: f"{n} · {rows_text(by_name[n])}",
            key=f"{prefix}_schema_table",
        )
        table_details(prefix, by_name[name or next(iter(by_name))])


def table_details(prefix: str, table: ui.TableInfo) -> None:
    """One table's columns and types, and buttons adding its name or a column's to the SQL."""
    columns = pd.DataFrame(
        [{"Column": c.name, "Type": c.type or ui.MISSING} for c in table.columns],
        columns=["Column", "Type"],
    )
    st.dataframe(columns, hide_index=True, width="stretch", height=min(300, 38 + 35 * len(columns)))
    sql_key = f"{prefix}_sql"
    column_names = [c.name for c in table.columns]
    column = st.selectbox(
        "Column", column_names, key=f"{prefix}_schema_column", index=0 if column_names else None
    )
    buttons = st.container(horizontal=True)
    buttons.button(
        "Add the table name",
        icon=":material/add:",
        key=f"{prefix}_schema_add_table",
        on_click=add_to_sql,
        args=(sql_key, table.sql_name),
    )
    if column is not None:
        buttons.button(
            "Add the column name",
            icon=":material/add:",
            key=f"{prefix}_schema_add_column",
            on_click=add_to_sql,
            args=(sql_key, ui.quote_name(column)),
        )
    st.caption(
        "A name is added at the end of the SQL: Streamlit cannot type at the cursor of "
        "the SQL box. Or copy it from here:"
    )
    st.code(
        table.sql_name if column is None else f"{table.sql_name}.{ui.quote_name(column)}",
        language="sql",
    )


def test_query_section(prefix: str, spec: Spec) -> None:
    """ "Test query": the first 20 rows of the draft, read-only, nothing saved."""
    test_clicked = st.button(
        "Test query",
        icon=":material/science:",
        key=f"{prefix}_test",
        help="Runs the query read-only and shows the first 20 rows.",
    )
    preview_key = f"{prefix}_preview"
    if test_clicked:
        st.session_state.pop(preview_key, None)

        def preview(actor: str) -> tuple[list[str], list[list[Any]]]:
            columns, rows = store.preview_query(
                spec["data_source"] or "",
                spec["sql"],
                parameters=spec["parameters"],
                limit=20,
                actor=actor,
            )
            return [c.name for c in columns], rows

        def failed(error: ui.KPIStoreError) -> None:
            st.session_state[preview_key] = ("error", str(error))

        result = ui.act(
            "test a query", preview, spinner="Running the query…", on_error=failed, rerun=None
        )
        if result is not None:
            st.session_state[preview_key] = ("ok", result)
    if preview_key in st.session_state:
        kind, payload = st.session_state[preview_key]
        if kind == "error":
            st.error(f"Test query failed: {ui.md(payload)}", icon=":material/error:")
        else:
            names, rows = payload
            st.success(f"The query works: first {len(rows)} row(s) below.", icon=":material/check:")
            st.dataframe(pd.DataFrame(rows, columns=names), hide_index=True, width="stretch")


def value_section(prefix: str, kpi: ui.KPI | None, errors: Errors) -> Spec:
    """The headline value: its column, aggregation and unit."""
    spec: Spec = {}
    st.markdown("### The headline value and its target")
    c1, c2, c3 = st.columns(3)
    with c1:
        value_column = st.text_input(
            "Value column",
            value=(kpi.value_column or "") if kpi else "",
            key=f"{prefix}_value_column",
            help="The result column the headline figure is made of.",
        )
        spec["value_column"] = value_column or None
        ui.field_error(errors, "value_column")
    with c2:
        spec["aggregation"] = st.selectbox(
            "Aggregation",
            AGGREGATIONS,
            index=AGGREGATIONS.index(kpi.aggregation) if kpi else 0,
            format_func=lambda a: AGG_LABELS[a],
            key=f"{prefix}_aggregation",
        )
        ui.field_error(errors, "aggregation")
    with c3:
        spec["unit"] = st.text_input(
            "Unit", value=kpi.unit if kpi else "", key=f"{prefix}_unit", placeholder="$, %, orders…"
        )
        ui.field_error(errors, "unit")
    return spec


def target_section(prefix: str, kpi: ui.KPI | None, errors: Errors) -> Spec:
    """The target, which direction is better, and the amber tolerance."""
    spec: Spec = {}
    c1, c2, c3 = st.columns(3)
    with c1:
        target = st.number_input(
            "Target", value=kpi.target if kpi else None, key=f"{prefix}_target", placeholder="none"
        )
        spec["target"] = _number_or_none(target)
        ui.field_error(errors, "target")
    with c2:
        spec["direction"] = st.selectbox(
            "Direction",
            DIRECTIONS,
            index=DIRECTIONS.index(kpi.direction) if kpi else 0,
            format_func=lambda d: DIRECTION_LABELS[d],
            key=f"{prefix}_direction",
        )
        ui.field_error(errors, "direction")
    with c3:
        tolerance = st.number_input(
            "Tolerance (%)",
            value=float(kpi.tolerance_pct) if kpi else 10.0,
            min_value=0.0,
            max_value=1000.0,
            step=1.0,
            key=f"{prefix}_tolerance",
            help="How far from the target still counts as amber, not red.",
        )
        spec["tolerance_pct"] = float(tolerance)
        ui.field_error(errors, "tolerance_pct")
    return spec


def run_settings_section(prefix: str, kpi: ui.KPI | None, errors: Errors) -> Spec:
    """Time limit and retries (empty: the store's defaults)."""
    spec: Spec = {}
    with st.expander("Run settings", icon=":material/tune:"):
        c1, c2 = st.columns(2)
        with c1:
            timeout = st.number_input(
                "Timeout (seconds)",
                value=kpi.timeout_s if kpi else None,
                min_value=0.1,
                key=f"{prefix}_timeout",
                placeholder="default",
            )
            spec["timeout_s"] = _number_or_none(timeout)
            ui.field_error(errors, "timeout_s")
        with c2:
            retries = st.number_input(
                "Retries on transient errors",
                value=kpi.max_retries if kpi else None,
                min_value=0,
                max_value=10,
                step=1,
                key=f"{prefix}_retries",
                placeholder="default",
            )
            spec["max_retries"] = None if retries is None else int(retries)
            ui.field_error(errors, "max_retries")
    return spec


def definition_form(prefix: str, kpi: ui.KPI | None, errors: Errors) -> Spec:
    """Every field of a KPI definition, section by section; returns the spec as a dict."""
    spec = identity_section(prefix, kpi, errors)
    spec |= query_section(prefix, kpi, errors)
    st.markdown("**Parameters**")
    spec["parameters"] = parameter_rows(prefix, list(kpi.parameters) if kpi else [], errors)
    test_query_section(prefix, spec)
    spec |= value_section(prefix, kpi, errors)
    spec |= target_section(prefix, kpi, errors)
    spec |= ui.official_and_period_section(
        prefix, kpi, spec["parameters"], spec["aggregation"], errors
    )
    spec |= run_settings_section(prefix, kpi, errors)
    return spec


def conflict_rows(
    plan: ui.EditOnTop, mine: Spec, opened: ui.KPI, theirs: ui.KPI, base: int
) -> list[Spec]:
    """One row per field either side changed: labels and values as people read them
    (the target with each version's unit), not field names and raw numbers."""
    my_unit = str(mine.get("unit", opened.unit) or "")
    rows = []
    for field in ui.KPI.model_fields:
        if field not in plan.mine and field not in plan.theirs:
            continue
        rows.append(
            {
                "Field": ui.field_label(field),
                f"Version {base} (you opened)": ui.field_text(
                    field, getattr(opened, field), opened.unit
                ),
                "Your edit": ui.field_text(field, mine.get(field), my_unit),
                f"Version {theirs.version} (saved)": ui.field_text(
                    field, getattr(theirs, field), theirs.unit
                ),
            }
        )
    return rows


def conflict_panel(kpi_id: int, mine: Spec, prefix: str, base: int, note: str) -> None:
    """Both versions side by side after a conflicting save; nothing is overwritten. The
    edit can be discarded (load theirs) or, when the two changed different fields, saved
    on top of theirs: a new version from theirs plus the fields this edit changed."""
    theirs = store.get_kpi(kpi_id, actor=me.actor)
    opened = store.get_kpi(kpi_id, base, actor=me.actor)
    plan = ui.edit_on_top(opened.spec(), mine, theirs.spec())
    st.error(
        f"Not saved: {ui.md(theirs.updated_by)} saved version {theirs.version} of this KPI "
        f"{ui.time_ago(theirs.updated_at)}, after you opened version {base}. "
        "Nothing was overwritten. Compare below, then keep your edit on top of their "
        "version, or load their version and apply your change again.",
        icon=":material/sync_problem:",
    )
    rows = conflict_rows(plan, mine, opened, theirs, base)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    yours = ", ".join(ui.field_label(f) for f in plan.mine)
    if plan.overlap:
        both = ", ".join(ui.field_label(f) for f in plan.overlap)
        why = f"You both changed {both}: load their version and apply your change again."
    elif not plan.mine:
        why = f"Your form holds version {base} unchanged: there is no edit to keep."
    else:
        why = None
    buttons = st.container(horizontal=True)
    keep = buttons.button(
        f"Keep my edit on top of version {theirs.version}",
        key=f"{prefix}_on_top",
        type="primary",
        icon=":material/merge:",
        disabled=not plan.possible,
        help=why
        or f"Saves version {theirs.version + 1}: version {theirs.version} with your "
        f"changes to {yours}.",
    )
    if buttons.button(
        f"Load version {theirs.version} (discard my edit)",
        key=f"{prefix}_reload",
        icon=":material/refresh:",
    ):
        st.session_state[f"kp_base_{kpi_id}"] = theirs.version
        st.rerun()
    if why:
        st.caption(why)
    if keep:
        save_on_top(kpi_id, plan.mine, theirs, note, prefix, yours)


def save_on_top(
    kpi_id: int, changes: Spec, theirs: ui.KPI, note: str, prefix: str, yours: str
) -> None:
    """Save ``changes`` as a new version on top of ``theirs``; compare again if someone
    saved meanwhile."""

    def on_top(actor: str) -> ui.KPI | None:
        try:
            return store.update_kpi(
                kpi_id, changes, actor, expected_version=theirs.version, note=note
            )
        except ui.VersionConflictError:  # saved again meanwhile: compare with that one
            st.rerun()
            return None

    saved = ui.act("save your edit", on_top, on_error=refused, rerun=None)
    if saved is not None:
        ui.forget_error(prefix)
        st.session_state.pop(f"{prefix}_conflict", None)
        st.session_state[f"kp_base_{kpi_id}"] = saved.version
        ui.flash(
            f"Saved version {saved.version} of '{ui.md(saved.name)}': your changes to "
            f"{ui.md(yours)} on top of version {theirs.version}."
        )
        st.rerun()


# -- create ---------------------------------------------------------------------------------


def create_form() -> None:
    st.header("New KPI", divider="gray")
    if ui.locked(ui.Role.EDITOR, "create KPIs"):
        return
    nonce = st.session_state.setdefault("kp_new_nonce", 0)
    prefix = f"kf_new_{nonce}"
    spec = definition_form(prefix, None, ui.remembered_errors(prefix))
    ui.show_remembered_error(prefix)
    if not st.button(
        "Create KPI", type="primary", icon=":material/add_circle:", key=f"{prefix}_save"
    ):
        return

    def created(kpi: ui.KPI) -> str:
        ui.forget_error(prefix)
        st.session_state["kp_new_nonce"] = nonce + 1
        ui.open_on_rerun("kpi", kpi.id)
        return f"KPI '{ui.md(kpi.name)}' created (version 1)."

    def refused(error: ui.KPIStoreError) -> None:
        ui.remember_error(prefix, error)
        st.rerun()

    ui.act(
        "create a KPI", lambda actor: store.create_kpi(spec, actor), done=created, on_error=refused
    )


if selected is None:
    create_form()
    st.stop()

# -- view and edit ------------------------------------------------------------------------

kpi = by_id[selected]
base_key = f"kp_base_{kpi.id}"
if base_key not in st.session_state:
    st.session_state[base_key] = kpi.version
base = st.session_state[base_key]
prefix = f"kf_{kpi.id}_v{base}"
is_archived = kpi.status == ui.KPIStatus.ARCHIVED
archive_label = "Unarchive" if is_archived else "Archive"

head, actions = st.columns([1, 1], vertical_alignment="center")
with head:
    st.header(ui.md(kpi.name), anchor=False)
    st.text(
        f"Version {kpi.version} · saved by {kpi.updated_by} {ui.time_ago(kpi.updated_at)} · "
        f"created by {kpi.created_by}"
    )
with actions:
    row = st.container(horizontal=True, horizontal_alignment="right", vertical_alignment="center")
    with row:
        ui.kpi_link(kpi.id, "Run", ui.Page.RUN, ":material/play_arrow:")
        ui.kpi_link(kpi.id, "History", ui.Page.HISTORY, ":material/timeline:")
        ui.kpi_link(kpi.id, "Alerts", ui.Page.ALERTS, ":material/notifications:")
    if row.button(
        archive_label,
        key="kp_archive",
        icon=":material/archive:",
        disabled=not me.may(ui.Role.EDITOR),
        help=me.refusal(ui.Role.EDITOR, f"{archive_label.lower()} KPIs"),
    ):
        ui.ask_to_confirm("kp_confirm", ("archive", kpi.id))
    if row.button(
        "Delete",
        key="kp_delete",
        icon=":material/delete:",
        disabled=not me.may(ui.Role.ADMIN),
        help=me.refusal(ui.Role.ADMIN, "delete KPIs"),
    ):
        ui.ask_to_confirm("kp_confirm", ("delete", kpi.id))


def change_status(what: str, actor: str) -> str:
    """Delete, archive or unarchive the open KPI; returns the message to flash."""
    if what == "delete":
        store.delete_kpi(kpi.id, actor)
        ui.open_on_rerun("kpi", None)
        message = f"KPI '{ui.md(kpi.name)}' deleted."
    elif is_archived:
        store.unarchive_kpi(kpi.id, actor)
        message = f"KPI '{ui.md(kpi.name)}' unarchived."
    else:
        store.archive_kpi(kpi.id, actor)
        message = f"KPI '{ui.md(kpi.name)}' archived."
    st.session_state.pop(base_key, None)
    return message


asked = ui.asking("kp_confirm")
if asked and asked[1] == kpi.id:
    what = asked[0]
    if what == "delete":
        question = (
            f"Delete '{ui.md(kpi.name)}' with all its versions and runs? This cannot be undone "
            "(the audit log keeps a record)."
        )
    else:
        question = f"{archive_label} '{ui.md(kpi.name)}'?"
    yes = f"Yes, {what if what == 'delete' else archive_label.lower()}"
    icon = ":material/warning:" if what == "delete" else ":material/archive:"
    if ui.confirmed("kp_confirm", asked, question, yes, icon):
        ui.act(f"{what} a KPI", lambda actor: change_status(what, actor), done=lambda m: m)

if is_archived or not me.may(ui.Role.EDITOR):
    if is_archived:
        st.info(
            "This KPI is archived: it is read-only and hidden from the overview. "
            "Unarchive it to edit or run it.",
            icon=":material/archive:",
        )
    else:
        ui.locked(ui.Role.EDITOR, "edit KPIs")
    ui.facts_grid(
        {"Data source": kpi.data_source, "Owner": kpi.owner, "Description": kpi.description},
        columns=3,
    )
    st.code(kpi.sql, language="sql")
    st.stop()

if base != kpi.version and f"{prefix}_conflict" not in st.session_state:
    st.info(
        f"You are editing version {base}; version {kpi.version} was saved since by "
        f"{ui.md(kpi.updated_by)}. Saving will show both versions.",
        icon=":material/info:",
    )

opened_kpi = kpi if base == kpi.version else store.get_kpi(kpi.id, base, actor=me.actor)
spec = definition_form(prefix, opened_kpi, ui.remembered_errors(prefix))
note = st.text_input(
    "Change note",
    key=f"{prefix}_note",
    placeholder="What changed and why (kept in the version history)",
)
ui.show_remembered_error(prefix)


def save(actor: str) -> ui.KPI | None:
    """Save a new version; ``None`` (and the conflict panel) if someone saved first."""
    try:
        return store.update_kpi(kpi.id, spec, actor, expected_version=base, note=note)
    except ui.VersionConflictError:
        ui.forget_error(prefix)
        st.session_state[f"{prefix}_conflict"] = True
        return None


def refused(error: ui.KPIStoreError) -> None:
    ui.remember_error(prefix, error)
    st.rerun()


if st.button("Save new version", type="primary", icon=":material/save:", key=f"{prefix}_save"):
    saved = ui.act("save changes", save, on_error=refused, rerun=None)
    if saved is not None:
        ui.forget_error(prefix)
        st.session_state.pop(f"{prefix}_conflict", None)
        if saved.version == base:
            st.info("Nothing changed: no new version was saved.")
        else:
            st.session_state[base_key] = saved.version
            ui.flash(f"Saved version {saved.version} of '{ui.md(saved.name)}'.")
            st.rerun()

if st.session_state.get(f"{prefix}_conflict"):
    conflict_panel(kpi.id, spec, prefix, base, note)
