"""Schedules: a KPI that runs itself at the times a cron expression names, in a time zone.

A cron expression has five fields (minute hour day month weekday) or six, the sixth being
seconds (croniter's order: ``0 9 * * 1-5 30`` is 09:00:30 on weekdays; ``* * * * * *``
every second). ``@daily``, ``@hourly``, ``@weekly``, ``@monthly`` and ``@yearly`` stand
for their five fields.

Fire times are computed in the zone's wall time (croniter over naive local times) and put
on the UTC time line with zoneinfo, so "02:30 every day" stays 02:30 local all year:

- a wall time that does not exist (spring forward: 02:30 on 29 March 2026 in
  Europe/Berlin) fires once, at the instant it names with the offset before the change,
  i.e. moved forward by the gap: 03:30 CEST (01:30 UTC). This is Python's ``fold=0``
  reading (PEP 495);
- a wall time that happens twice (fall back: 02:30 on 25 October 2026) fires once, at its
  first occurrence (02:30 CEST, 00:30 UTC). A schedule that repeats within the hour (its
  second, minute or hour field starts with ``*``, Vixie cron's "wildcard jobs") fires in
  both passes, so an hourly or every-minute schedule keeps its pace through the change.

croniter's own reading of zone-aware times is not used: it fires 02:30 twice in autumn.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import ExpressionDescriptor, Options  # type: ignore[import-untyped]
from croniter import CroniterError, croniter  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, computed_field

from .errors import ValidationError
from .models import KPISpec
from .periods import is_relative_date, relative_date
from .validation import bind_parameters
from .vocabulary import ParamType

UTC = dt.UTC
MAX_CRON_CHARS, MAX_ZONE_CHARS = 200, 64
MISSED_COUNT_CAP = 1_000  # after a long downtime the tick says "at least this many"
_NEAR = dt.timedelta(hours=3)  # wider than any daylight-saving shift
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

FIELDS = (  # what each field names and accepts, for messages
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day", "1-31 or L"),
    ("month", "1-12 or JAN-DEC"),
    ("weekday", "0-7 or SUN-SAT, 0 and 7 both Sunday"),
    ("second", "0-59"),
)


class TickOutcome(StrEnum):
    FIRED = "fired"  # a run was queued
    SKIPPED = "skipped"  # a run of the schedule was still queued or running
    FAILED = "failed"  # the run could not be created (archived KPI, parameters, person)


class Schedule(BaseModel):
    """A KPI that runs itself. Times are naive UTC like the rest of the store;
    ``next_run_at`` is None while paused."""

    model_config = ConfigDict(frozen=True)

    id: int
    kpi_id: int
    cron: str
    timezone: str
    params: dict[str, Any]  # as given: relative dates ("start of last month") as text
    run_as: str
    active: bool
    next_run_at: dt.datetime | None
    last_run_at: dt.datetime | None
    last_run_id: int | None
    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime
    updated_by: str

    @property
    def words(self) -> str:
        """The cron expression in words: "At 02:30"."""
        return describe(self.cron)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def description(self) -> str:
        """The cron expression in words, with its zone: "At 02:30 (Europe/Berlin)"."""
        return f"{self.words} ({self.timezone})"

    @property
    def next_run_local(self) -> dt.datetime | None:
        """``next_run_at`` as a time in the schedule's zone (zone-aware); None while paused."""
        if self.next_run_at is None:
            return None
        return self.next_run_at.replace(tzinfo=UTC).astimezone(checked_zone(self.timezone))

    def next_fire_times(self, n: int = 5, after: dt.datetime | None = None) -> list[dt.datetime]:
        """The next ``n`` fire times after ``after`` (default now), as times in the
        schedule's zone (zone-aware)."""
        return fire_times(self.cron, self.timezone, after, n)


class CronPreview(BaseModel):
    """An unsaved cron expression and zone, checked: in words, and its next fire times."""

    model_config = ConfigDict(frozen=True)

    cron: str  # its spacing tidied
    timezone: str
    words: str  # "At 02:30"
    fire_times: list[dt.datetime]  # zone-aware, in ``timezone``

    @property
    def description(self) -> str:
        """In words with its zone, as ``Schedule.description``: "At 02:30 (Europe/Berlin)"."""
        return f"{self.words} ({self.timezone})"


def preview(cron: Any, timezone: Any, n: int = 5, after: dt.datetime | None = None) -> CronPreview:
    """``cron`` in ``timezone`` checked (ValidationError saying why it cannot fire),
    described in words, with its next ``n`` fire times."""
    text = checked_cron(cron)
    zone = str(checked_zone(timezone))
    return CronPreview(
        cron=text,
        timezone=zone,
        words=describe(text),
        fire_times=fire_times(text, zone, after, n),
    )


class Tick(BaseModel):
    """One due tick a worker decided: what it did and why (``run_id`` when it fired).
    ``missed`` counts the later fire times that passed before it was decided (downtime):
    they were folded into this one."""

    model_config = ConfigDict(frozen=True)

    id: int
    schedule_id: int
    due_at: dt.datetime
    decided_at: dt.datetime
    outcome: TickOutcome
    reason: str | None
    run_id: int | None
    missed: int
    decided_by: str


# -- cron expressions and zones --------------------------------------------------------------


def _cron_error(message: str) -> ValidationError:
    return ValidationError(message, {"cron": message})


def _fields(cron: str) -> list[str]:
    return ALIASES.get(cron.lower(), cron).split()


def _expression(cron: str) -> str:
    return " ".join(_fields(cron))


def checked_cron(cron: Any) -> str:
    """A cron expression with its spacing tidied, refused with a message saying why."""
    if not isinstance(cron, str) or not cron.strip():
        raise _cron_error("Give a cron expression, such as '0 9 * * 1-5' (09:00 on weekdays).")
    text = " ".join(cron.split())
    if len(text) > MAX_CRON_CHARS:
        raise _cron_error(f"The cron expression is longer than {MAX_CRON_CHARS} characters.")
    fields = _fields(text)
    if len(fields) not in (5, 6):
        shortcuts = ", ".join(sorted(ALIASES))
        raise _cron_error(
            f"The cron expression '{text}' has {len(fields)} field(s); give 5 (minute hour "
            f"day month weekday), 6 (the sixth is seconds), or one of {shortcuts}."
        )
    for index, field in enumerate(fields):
        name, accepted = FIELDS[index]
        alone = ["*"] * len(fields)
        alone[index] = field
        if not _fires(" ".join(alone)):
            raise _cron_error(
                f"'{text}' is not a valid cron expression: its {name} field '{field}' is "
                f"not valid ({name}s: {accepted}; every field also takes *, lists a,b, "
                "ranges a-b and steps */n)."
            )
    if not _fires(_expression(text)):
        raise _cron_error(f"'{text}' never fires: it names no time that exists.")
    return text


def _fires(expression: str) -> bool:
    try:
        croniter(expression, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except CroniterError:
        return False
    return True


def checked_zone(name: Any) -> ZoneInfo:
    """The IANA time zone ``name`` names (``Europe/Berlin``, ``UTC``)."""
    message = (
        f"Unknown time zone {name!r}: give an IANA name such as Europe/Berlin, "
        "America/New_York or UTC."
    )
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_ZONE_CHARS:
        raise ValidationError(message, {"timezone": message})
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(message, {"timezone": message}) from None


def describe(cron: str) -> str:
    """The expression in words ("At 09:00, Monday through Friday"); itself when
    cron-descriptor cannot read it. cron-descriptor puts seconds first, croniter last."""
    fields = _fields(cron)
    if len(fields) == 6:
        fields = [fields[5], *fields[:5]]
    options = Options()
    options.use_24hour_time_format = True
    try:
        return str(ExpressionDescriptor(" ".join(fields), options).get_description())
    except Exception:  # a parser's refusal of a form croniter accepts: show the text
        return cron


# -- fire times ------------------------------------------------------------------------------


def as_utc(moment: dt.datetime | None) -> dt.datetime:
    """``moment`` (naive UTC, or zone-aware) as the store's naive UTC; now when None."""
    if moment is None:
        return dt.datetime.now(UTC).replace(tzinfo=None)
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _wall(moment: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    return moment.astimezone(zone).replace(tzinfo=None, fold=0)


def _instant(wall: dt.datetime, zone: ZoneInfo, fold: int) -> dt.datetime:
    return wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)


def _repeats_within_hour(cron: str) -> bool:
    fields = _fields(cron)
    wild = [fields[0], fields[1], *fields[5:]]
    return any(field.startswith("*") for field in wild)


def next_after(cron: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after ``after`` (naive UTC), as naive UTC."""
    zone = checked_zone(timezone)
    moment = after.replace(tzinfo=UTC)
    best = _first_pass(cron, zone, moment)
    if _repeats_within_hour(cron):
        second = _second_pass(cron, zone, moment)
        if second is not None and second < best:
            best = second
    return best.replace(tzinfo=None)


def _first_pass(cron: str, zone: ZoneInfo, moment: dt.datetime) -> dt.datetime:
    """The first ``fold=0`` reading of a matching wall time after ``moment``. Readings
    never decrease with the wall time, so none before ``moment``'s own wall time counts."""
    times = croniter(_expression(cron), _wall(moment, zone))
    while True:  # at most a repeated hour's matches lie at or before ``moment``
        instant = _instant(times.get_next(dt.datetime), zone, 0)
        if instant > moment:
            return instant


def _second_pass(cron: str, zone: ZoneInfo, moment: dt.datetime) -> dt.datetime | None:
    """The first second-pass (``fold=1``) reading after ``moment`` of a wall time the
    zone repeats near ``moment``; None when no hour is repeated near it."""
    repeated = _repeated_hour(zone, moment)
    if repeated is None:
        return None
    start, end, turn = repeated
    begin = _wall(moment, zone) if moment >= turn else start - dt.timedelta(seconds=1)
    times = croniter(_expression(cron), begin)
    wall = times.get_next(dt.datetime)
    while wall < start:
        wall = times.get_next(dt.datetime)
    return _instant(wall, zone, 1) if wall < end else None


def _repeated_hour(
    zone: ZoneInfo, moment: dt.datetime
) -> tuple[dt.datetime, dt.datetime, dt.datetime] | None:
    """The wall times the zone goes through twice within ``_NEAR`` of ``moment`` (start,
    end) and the instant the clocks went back; None when they do not go back then."""
    low = (moment - _NEAR).replace(microsecond=0)
    high = low + 2 * _NEAR
    before, after = low.astimezone(zone).utcoffset(), high.astimezone(zone).utcoffset()
    if before is None or after is None or after >= before:
        return None
    while high - low > dt.timedelta(seconds=1):  # the change, to the (whole) second
        middle = low + dt.timedelta(seconds=(high - low).total_seconds() // 2)
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    start = _wall(high, zone)
    return start, start + (before - after), high


def fire_times(
    cron: str, timezone: str, after: dt.datetime | None = None, n: int = 5
) -> list[dt.datetime]:
    """The next ``n`` fire times after ``after`` (default now), zone-aware in the zone."""
    zone, moment, times = checked_zone(timezone), as_utc(after), []
    for _ in range(max(0, n)):
        moment = next_after(cron, timezone, moment)
        times.append(moment.replace(tzinfo=UTC).astimezone(zone))
    return times


def missed_between(cron: str, timezone: str, due: dt.datetime, now: dt.datetime) -> int:
    """How many fire times lie after ``due`` and at or before ``now`` (capped)."""
    count, moment = 0, due
    while count < MISSED_COUNT_CAP:
        moment = next_after(cron, timezone, moment)
        if moment > now:
            break
        count += 1
    return count


# -- parameter sets --------------------------------------------------------------------------


def _is_relative(spec: KPISpec, name: str, value: Any) -> bool:
    dates = {p.name for p in spec.parameters if p.type == ParamType.DATE}
    return name in dates and isinstance(value, str) and is_relative_date(value)


def local_today(timezone: str, now: dt.datetime) -> dt.date:
    """The date it is in ``timezone`` at ``now`` (naive UTC)."""
    return now.replace(tzinfo=UTC).astimezone(checked_zone(timezone)).date()


def resolved(
    spec: KPISpec, params: dict[str, Any], timezone: str, now: dt.datetime
) -> dict[str, Any]:
    """The parameter set with its relative dates resolved as of ``now`` in the zone."""
    today, values = local_today(timezone, now), {}
    for name, value in params.items():
        if not _is_relative(spec, name, value):
            values[name] = value
            continue
        try:
            values[name] = relative_date(value, today).isoformat()
        except ValueError as error:
            raise ValidationError(f"Parameter '{name}': {error}.", {name: str(error)}) from None
    return values


def checked_params(spec: KPISpec, params: Any, timezone: str, now: dt.datetime) -> dict[str, Any]:
    """A schedule's parameter set as stored: checked as a run's would be (relative dates
    resolved as of ``now``), values in their stored form, relative dates kept as text."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValidationError("Parameters must be given as name = value pairs.")
    try:
        bound = bind_parameters(spec, resolved(spec, params, timezone, now))
    except ValidationError as error:
        hint = _relative_hint(spec, params)
        if not hint:
            raise
        fields = {**error.field_errors, **hint}
        raise ValidationError(
            f"{error} A date may also be relative, such as 'yesterday' or 'start of last month'.",
            fields,
        ) from None
    return {
        name: " ".join(value.lower().split())
        if _is_relative(spec, name, value)
        else bound.json[name]
        for name, value in params.items()
    }


def _relative_hint(spec: KPISpec, params: dict[str, Any]) -> dict[str, str]:
    """The date parameters given text that is neither a date nor a relative date."""
    dates = {p.name for p in spec.parameters if p.type == ParamType.DATE}
    hint: dict[str, str] = {}
    for name, value in params.items():
        if name in dates and isinstance(value, str) and not is_relative_date(value):
            try:
                dt.date.fromisoformat(value.strip())
            except ValueError:
                hint[name] = f"'{value.strip()}' is neither a date nor a relative date"
    return hint
