"""People: who signs in, their role and the data sources they are limited to.

A person is keyed by their email, case-folded. ``KPI_ADMINS`` names people who are always
active admins (how the first admin gets in, and the way back in when the last one is
locked out); nobody else becomes one except through ``update_person`` by an admin.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from . import audit, db
from .config import Settings
from .errors import NotFoundError, PermissionDeniedError, ValidationError
from .models import Person
from .schema import data_sources as sources_table
from .schema import people as table
from .validation import MAX_ACTOR_CHARS
from .vocabulary import AuditAction, Role

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
LAST_SEEN_EVERY = dt.timedelta(minutes=1)  # a visit refreshes ``last_seen_at`` at most this often
MAX_NAME_CHARS = 200


def normal_email(email: Any) -> str:
    """The email as stored and compared: stripped and case-folded; refused when not one."""
    text = email.strip().casefold() if isinstance(email, str) else ""
    if not _EMAIL.match(text) or len(text) > MAX_ACTOR_CHARS:
        raise ValidationError(
            f"{email!r} is not an email address (name@domain, at most {MAX_ACTOR_CHARS} "
            "characters).",
            {"email": "not an email address"},
        )
    return text


def checked_role(role: Any) -> Role:
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(Role)
        raise ValidationError(
            f"{role!r} is not a role: choose one of {allowed}.", {"role": "unknown role"}
        ) from None


def _checked_name(name: Any, email: str) -> str:
    text = name.strip() if isinstance(name, str) else ""
    return (text or email)[:MAX_NAME_CHARS]


def _checked_sources(connection: sa.engine.Connection, names: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(sorted(set(names)))
    known: set[str] = set(connection.execute(sa.select(sources_table.c.name)).scalars())
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValidationError(
            f"There is no data source named {', '.join(map(repr, unknown))}.",
            {"data_sources": "unknown data source"},
        )
    return wanted


def search_key(name: str, email: str) -> str:
    return f"{name} {email}".casefold()


def _to_person(row: sa.Row) -> Person:
    values = dict(row._mapping)
    values.pop("search_key", None)
    values["data_sources"] = tuple(db.loads(values["data_sources"]) or ())
    values.pop("created_by", None)
    return Person.model_validate(values)


def find(connection: sa.engine.Connection, email: str) -> Person | None:
    row = connection.execute(sa.select(table).where(table.c.email == email)).first()
    return None if row is None else _to_person(row)


def get(connection: sa.engine.Connection, email: Any) -> Person:
    person = find(connection, normal_email(email))
    if person is None:
        raise NotFoundError(f"There is no person with the email {email!r}.")
    return person


def all_people(connection: sa.engine.Connection) -> list[Person]:
    query = sa.select(table).order_by(table.c.display_name, table.c.email)
    return [_to_person(row) for row in connection.execute(query)]


def add(
    engine: sa.engine.Engine,
    settings: Settings,
    *,
    email: Any,
    display_name: Any = "",
    role: Any = Role.VIEWER,
    data_sources: Iterable[str] = (),
    actor: str,
) -> Person:
    """Add a person; refused when the email is taken."""
    email = normal_email(email)
    role = Role.ADMIN if email in settings.admin_emails() else checked_role(role)
    with db.write_tx(engine) as connection:
        if find(connection, email) is not None:
            raise ValidationError(f"{email} is already a person here.", {"email": "taken"})
        scope = _checked_sources(connection, data_sources)
        return _insert(connection, email, _checked_name(display_name, email), role, scope, actor)


def _insert(
    connection: sa.engine.Connection,
    email: str,
    name: str,
    role: Role,
    scope: tuple[str, ...],
    actor: str,
    via: str = "added",
) -> Person:
    now = db.utcnow()
    connection.execute(
        table.insert().values(
            email=email,
            display_name=name,
            search_key=search_key(name, email),
            role=role,
            active=True,
            data_sources=db.dumps(list(scope)),
            created_at=now,
            created_by=actor,
            last_seen_at=now if via == "sign-in" else None,
        )
    )
    details = {"email": email, "name": name, "role": role, "data_sources": list(scope)}
    audit.append(
        connection,
        actor=actor,
        action=AuditAction.PERSON_ADD,
        entity=f"person:{email}",
        details={**details, "via": via},
    )
    person = find(connection, email)
    assert person is not None
    return person


def update(
    engine: sa.engine.Engine,
    settings: Settings,
    email: Any,
    *,
    actor: str,
    role: Any = None,
    data_sources: Iterable[str] | None = None,
    active: bool | None = None,
    display_name: Any = None,
) -> Person:
    """Change a person's role, scope, active flag or name; the changes are audited."""
    email = normal_email(email)
    with db.write_tx(engine) as connection:
        before = find(connection, email)
        if before is None:
            raise NotFoundError(f"There is no person with the email {email!r}.")
        values: dict[str, Any] = {}
        if role is not None:
            values["role"] = checked_role(role)
        if data_sources is not None:
            values["data_sources"] = _checked_sources(connection, data_sources)
        if active is not None:
            values["active"] = bool(active)
        if display_name is not None:
            values["display_name"] = _checked_name(display_name, email)
        changes = {
            k: {"from": getattr(before, k), "to": v}
            for k, v in values.items()
            if getattr(before, k) != v
        }
        if not changes:
            return before
        _check_admin_kept(connection, settings, before, values)
        stored = {**values}
        if "display_name" in stored:
            stored["search_key"] = search_key(stored["display_name"], email)
        if "data_sources" in stored:
            stored["data_sources"] = db.dumps(list(stored["data_sources"]))
        connection.execute(table.update().where(table.c.email == email).values(**stored))
        audit.append(
            connection,
            actor=actor,
            action=AuditAction.PERSON_UPDATE,
            entity=f"person:{email}",
            details={"email": email, "changes": _jsonable(changes)},
        )
        after = find(connection, email)
        assert after is not None
        return after


def _jsonable(changes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    return {k: {side: plain(v) for side, v in change.items()} for k, change in changes.items()}


def _check_admin_kept(
    connection: sa.engine.Connection, settings: Settings, before: Person, values: dict[str, Any]
) -> None:
    """A ``KPI_ADMINS`` person stays an active admin; the last active admin stays too."""
    demoted = values.get("role", before.role) != Role.ADMIN or values.get("active") is False
    if not demoted or before.role != Role.ADMIN or not before.active:
        return
    if before.email in settings.admin_emails():
        raise ValidationError(
            f"{before.email} is an admin through KPI_ADMINS: remove them from that setting "
            "to change their role or deactivate them.",
            {"role": "fixed by KPI_ADMINS"},
        )
    others = connection.execute(
        sa.select(sa.func.count())
        .select_from(table)
        .where(table.c.role == Role.ADMIN, table.c.active, table.c.email != before.email)
    ).scalar_one()
    if not others and not settings.admin_emails():
        raise ValidationError(
            f"{before.email} is the last active admin: make someone else an admin first.",
            {"role": "last admin"},
        )


def sign_in(engine: sa.engine.Engine, settings: Settings, email: Any, name: Any) -> Person:
    """The person behind a verified sign-in, on every visit: added on their first visit
    (with ``KPI_DEFAULT_ROLE``, or admin when in ``KPI_ADMINS``), refused when inactive or
    unknown with the default role ``none``; ``last_seen_at`` refreshed now and then."""
    email = normal_email(email)
    with db.read_tx(engine) as connection:  # most visits change nothing: no write lock
        known = find(connection, email)
    if known is not None and _unchanged_visit(known, settings):
        return known
    with db.write_tx(engine) as connection:
        person = find(connection, email)
        if person is None:
            return _join(connection, settings, email, _checked_name(name, email))
        if email in settings.admin_emails() and (person.role != Role.ADMIN or not person.active):
            connection.execute(
                table.update().where(table.c.email == email).values(role=Role.ADMIN, active=True)
            )
            audit.append(
                connection,
                actor=email,
                action=AuditAction.PERSON_UPDATE,
                entity=f"person:{email}",
                details={"email": email, "changes": {"role": "admin"}, "via": "KPI_ADMINS"},
            )
        elif not person.active:
            raise PermissionDeniedError(
                f"{email} has been deactivated here: ask an admin to reactivate you.", "sign_in"
            )
        _seen(connection, person)
        found = find(connection, email)
        assert found is not None
        return found


def _unchanged_visit(person: Person, settings: Settings) -> bool:
    """An active person seen lately whom KPI_ADMINS does not need to fix."""
    fixed = person.email in settings.admin_emails() and person.role != Role.ADMIN
    recent = person.last_seen_at is not None and (
        db.utcnow() - person.last_seen_at < LAST_SEEN_EVERY
    )
    return person.active and not fixed and recent


def _join(connection: sa.engine.Connection, settings: Settings, email: str, name: str) -> Person:
    if email in settings.admin_emails():
        role = Role.ADMIN
    elif settings.default_role == "none":
        raise PermissionDeniedError(
            f"{email} is not known here, and this KPI Desk admits only people an admin has "
            "added: ask an admin to add you.",
            "sign_in",
        )
    else:
        role = Role(settings.default_role)
    return _insert(connection, email, name, role, (), actor=email, via="sign-in")


def _seen(connection: sa.engine.Connection, person: Person) -> None:
    now = db.utcnow()
    if person.last_seen_at is None or now - person.last_seen_at >= LAST_SEEN_EVERY:
        connection.execute(
            table.update().where(table.c.email == person.email).values(last_seen_at=now)
        )
