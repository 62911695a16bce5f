"""The part of ``KPIStore`` about people: sign-in, roles, data-source scopes.

A mixin of the one facade; the rules are in ``people.py`` (who exists) and ``access.py``
(what each may do).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import db, people
from .access import Guard, Rule, allowed, unguarded
from .config import Settings
from .errors import PermissionDeniedError
from .models import Person
from .validation import checked_actor
from .vocabulary import Role

if TYPE_CHECKING:
    import sqlalchemy as sa


class PeopleAdmin:
    """Who signs in and what they may do; each change is audited."""

    if TYPE_CHECKING:
        engine: sa.engine.Engine
        settings: Settings
        _guard: Guard

    @unguarded("the door itself: admits only active people, or newcomers by the settings")
    def sign_in(self, email: str, name: str = "") -> Person:
        """The person behind a verified sign-in (the dashboard calls this on every visit,
        with the provider's email and name). First visit: added with ``KPI_DEFAULT_ROLE``
        (admin for ``KPI_ADMINS``). Raises PermissionDeniedError when they are
        deactivated, or unknown while ``KPI_DEFAULT_ROLE=none``."""
        try:
            return people.sign_in(self.engine, self.settings, email, name)
        except PermissionDeniedError as refused:
            self._guard.deny(people.normal_email(email), "sign_in", str(refused))

    @allowed(Role.ADMIN)
    def people(self, *, actor: str | None = None) -> list[Person]:
        """Everyone known here, by name."""
        with db.read_tx(self.engine) as connection:
            return people.all_people(connection)

    @allowed(Role.VIEWER)
    def person(self, email: str, *, actor: str | None = None) -> Person:
        """One person by email (any case). Below admin, only yourself."""
        if self.settings.auth_on and people.normal_email(email) != people.normal_email(actor):
            self._guard.check(_ADMIN_RULE, "person", {"actor": actor})
        with db.read_tx(self.engine) as connection:
            return people.get(connection, email)

    @allowed(Role.ADMIN)
    def add_person(
        self,
        email: str,
        actor: str,
        display_name: str = "",
        role: Role | str = Role.VIEWER,
        data_sources: Iterable[str] = (),
    ) -> Person:
        """Add someone before their first sign-in, with a role and optional scope."""
        return people.add(
            self.engine,
            self.settings,
            email=email,
            display_name=display_name,
            role=role,
            data_sources=data_sources,
            actor=checked_actor(actor),
        )

    @allowed(Role.ADMIN)
    def update_person(
        self,
        email: str,
        actor: str,
        *,
        role: Role | str | None = None,
        data_sources: Iterable[str] | None = None,
        active: bool | None = None,
        display_name: str | None = None,
    ) -> Person:
        """Change a person's role, data-source scope (empty = all), active flag or name.
        Takes effect at their next click. ``KPI_ADMINS`` people stay admins, and the last
        active admin cannot be demoted or deactivated."""
        changes: dict[str, Any] = {
            "role": role,
            "data_sources": data_sources,
            "active": active,
            "display_name": display_name,
        }
        return people.update(
            self.engine, self.settings, email, actor=checked_actor(actor), **changes
        )


_ADMIN_RULE = Rule(Role.ADMIN)
