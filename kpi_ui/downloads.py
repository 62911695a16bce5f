"""Downloading every row of a run without holding it in server memory.

``dashboard.py`` serves the app as ``st.App(..., routes=download_routes())``: besides
Streamlit's own routes there is ``/export/<token>.csv``, which streams a run's CSV a few
thousand rows at a time. The drill-down page shows a link with a token the store issued
for one run and one person (single use, a few minutes); redeeming it writes the EXPORT
audit entry with that person's name.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from kpi_store import Execution, KPIStore, KPIStoreError

from .messages import show_error

EXPORT_PATH = "/export/{token}.{ext}"
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "parquet": "application/vnd.apache.parquet",
}
LINK_REFRESH = dt.timedelta(seconds=60)  # a fresh token well before one expires
_SAFE_NAME = re.compile(r"[^a-z0-9]+")


def file_stem(name: str) -> str:
    """A file name made of the KPI name: ``Order Line Detail`` -> ``order-line-detail``."""
    return _SAFE_NAME.sub("-", name.lower()).strip("-") or "kpi"


def export_url(token: str, format: str = "csv") -> str:
    return EXPORT_PATH.replace("{token}", token).replace("{ext}", format)


def _encoded(chunks: Iterable[str | bytes]) -> Iterator[bytes]:
    for chunk in chunks:
        yield chunk.encode("utf-8") if isinstance(chunk, str) else chunk


def export_endpoint(store: Callable[[], KPIStore]) -> Callable[[Request], object]:
    """The ``/export/<token>.csv`` handler over the store ``store()`` returns."""

    async def export(request: Request) -> Response:
        token = str(request.path_params.get("token", ""))
        name = file_stem(str(request.query_params.get("name", "")))
        try:
            grant, chunks = await run_in_threadpool(store().open_export, token)
        except KPIStoreError as error:
            return PlainTextResponse(f"{error}\nReload the page for a new link.", 410)
        file_name = f"{name}-run-{grant.execution_id}.{grant.format}"
        return StreamingResponse(
            _encoded(chunks),
            media_type=MEDIA_TYPES[grant.format],
            headers={
                "Content-Disposition": f'attachment; filename="{file_name}"',
                "Cache-Control": "no-store",
            },
        )

    return export


def download_routes(store: Callable[[], KPIStore]) -> list[BaseRoute]:
    """The extra HTTP routes of the app (``st.App(routes=...)``)."""
    return [Route(EXPORT_PATH, export_endpoint(store), methods=["GET"])]


def full_export_link(
    store: KPIStore,
    run: Execution,
    kpi_name: str,
    actor: str,
    excel: bool,
    label: str,
    sort: list[tuple[str, str]] | None = None,
    filters: list[dict[str, Any]] | None = None,
    format: str = "csv",
) -> None:
    """A download link for every row of ``run`` (or of its sorted and filtered view), as
    ``csv``, ``xlsx`` or ``parquet``, renewed every minute while shown."""

    @st.fragment(run_every=LINK_REFRESH)
    def link() -> None:
        try:
            grant = store.export_link(
                run.id, actor, excel=excel, sort=sort, filters=filters, format=format
            )
        except KPIStoreError as error:
            show_error(error)
            return
        href = f"{export_url(grant.token, grant.format)}?name={file_stem(kpi_name)}"
        st.markdown(
            f'<a class="kpi-download" href="{html.escape(href)}" download '
            f'title="Every row of the run, streamed. Recorded in the audit log.">'
            f"&#x2B07;&#xFE0E; {html.escape(label)}</a>",
            unsafe_allow_html=True,
        )

    link()
