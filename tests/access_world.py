"""The world every access case runs in, and ``Case``: shared by ``test_access.py`` and
the ``access_cases_*.py`` modules that hold the cases of newer parts of the store."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import make_spec

from kpi_store import KPIStore, Role
from kpi_store.config import Settings

BOSS = "boss@example.com"  # an admin through KPI_ADMINS
ROLES = list(Role)
names = itertools.count(1)  # fresh names for what cases create


def email(role: Role) -> str:
    return f"{role}@example.com"


@dataclass
class World:
    """A store with sign-in on, a person per role, two data sources, KPIs and runs."""

    store: KPIStore
    folder: Path
    kpi: int  # on "shop", two versions
    other_kpi: int  # on "other"
    run: int  # a finished run of ``kpi`` asked for by the admin
    batch: str
    extra: dict[str, Any] = field(default_factory=dict)

    def fresh_kpi(self, **overrides: Any) -> int:
        spec = make_spec(name=f"KPI {next(names)}", **overrides)
        return self.store.create_kpi(spec, BOSS).id

    def queued_run(self) -> int:
        return self.store.submit(self.kpi, actor=BOSS).id


def auth_settings(url: str, **changes: Any) -> Settings:
    return Settings.from_env().replace(url=url, auth="oidc", admins=BOSS, **changes)


# -- one case per public method: (what to prepare as an admin, the call as ``actor``) -------

Call = Callable[[World, str], Any]
Prepare = Callable[[World], Any]


@dataclass(frozen=True)
class Case:
    call: Callable[[World, str, Any], Any]
    prepare: Prepare = lambda w: None  # noqa: E731
    least: Role | None = None  # when the call needs more than the method's rule says


def csv_file(w: World) -> Path:
    path = w.folder / f"upload{next(names)}.csv"
    path.write_text("a,b\n1,x\n2,y\n", encoding="utf-8")
    return path


def updated_twice(w: World) -> int:
    kpi_id = w.fresh_kpi()
    w.store.update_kpi(kpi_id, {"description": "v2"}, BOSS, expected_version=1)
    return kpi_id


def archived(w: World) -> int:
    kpi_id = w.fresh_kpi()
    w.store.archive_kpi(kpi_id, BOSS)
    return kpi_id


def spare_source(w: World) -> str:
    name = f"spare{next(names)}"
    shutil.copy(w.folder / "source.db", w.folder / f"{name}.db")
    w.store.add_data_source(name, f"sqlite:///{w.folder / name}.db", BOSS)
    return name


def spare_person(w: World) -> str:
    address = f"person{next(names)}@example.com"
    w.store.add_person(address, BOSS)
    return address
