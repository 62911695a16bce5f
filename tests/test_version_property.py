"""Property: any sequence of updates and restores keeps every version exactly as saved."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kpi_store import KPISpec, KPIStore

SQL_VARIANTS = [
    "SELECT SUM(amount) AS total FROM sales WHERE region = :region",
    "SELECT AVG(amount) AS total FROM sales WHERE region = :region",
    "SELECT COUNT(*) AS total\nFROM sales\nWHERE region = :region",
    "WITH r AS (SELECT * FROM sales WHERE region = :region) SELECT MAX(amount) AS total FROM r",
]
BASE_SPEC: dict[str, Any] = {
    "name": "Revenue",
    "data_source": "shop",
    "sql": SQL_VARIANTS[0],
    "parameters": [{"name": "region", "type": "str", "default": "north"}],
}

text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
changes = st.fixed_dictionaries(
    {},
    optional={
        "description": text,
        "target": st.none() | st.floats(allow_nan=False, allow_infinity=False),
        "tags": st.lists(st.sampled_from(["finance", "ops", " ops ", "board", ""]), max_size=4),
        "sql": st.sampled_from(SQL_VARIANTS),
        "unit": st.sampled_from(["", "EUR", "USD", "%", "orders"]),
    },
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("update"), changes),
        st.tuples(st.just("restore"), st.integers(min_value=0)),
    ),
    max_size=15,
)


def open_store(folder: Path) -> KPIStore:
    source = folder / "source.db"
    connection = sqlite3.connect(source)
    with connection:
        connection.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, region TEXT, amount REAL)")
    connection.close()
    store = KPIStore(f"sqlite:///{folder}/store.db")
    store.add_data_source("shop", f"sqlite:///{source}", "setup")
    return store


def dump(spec: KPISpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


@settings(max_examples=25, deadline=None)
@given(steps=steps)
def test_every_version_is_retrievable_exactly_as_saved(steps):
    with (
        tempfile.TemporaryDirectory(dir=os.environ["KPI_SOURCE_DIRS"]) as folder,
        open_store(Path(folder)) as store,
    ):
        kpi = store.create_kpi(BASE_SPEC, "alice")
        saved = {1: dump(kpi.spec())}  # the model: version -> spec saved at that step
        current = 1
        for kind, argument in steps:
            if kind == "update":
                expected = dump(KPISpec.model_validate({**saved[current], **argument}))
                result = store.update_kpi(kpi.id, argument, "bob", expected_version=current)
            else:
                version = argument % current + 1
                expected = saved[version]
                result = store.restore_version(kpi.id, version, "carol")
            if expected != saved[current]:  # a change that changes nothing saves no version
                current += 1
                saved[current] = expected
            assert result.version == current
            assert dump(result.spec()) == expected

        history = store.kpi_versions(kpi.id)
        assert [v.version for v in history] == list(range(current, 0, -1))
        for entry in history:
            assert dump(entry.spec) == saved[entry.version]
        for version, spec in saved.items():
            stored = store.get_kpi(kpi.id, version=version)
            assert stored.version == version
            assert dump(stored.spec()) == spec
