"""Persisted settings (key, parser, default, help) and where the store lives."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from queuectl.errors import InvalidInput, InvalidSetting
from queuectl.records import Record, field, fields, record, set_field

if TYPE_CHECKING:
    from pathlib import Path

SettingValue = int | float | None


#: Upper bounds: a value past them is a typo (``poll_interval 3600``), never a wish.
MAX_POLL_INTERVAL = 60.0
MAX_LEASE = 86400.0
MAX_BACKOFF = 365 * 86400.0
MAX_TIMEOUT = 1e9  # as a job's own timeout
MAX_RETRIES = 1_000_000  # as a job's own max_retries
MAX_BACKOFF_BASE = 1000.0
MAX_OUTPUT_LIMIT = 64 * 1024 * 1024
MAX_RETENTION = 100 * 365 * 86400.0
#: A lease must outlast two poll intervals: the worker renews it from its upkeep, which runs
#: once a poll interval, so a shorter lease would lapse while its worker is healthy.
LEASE_POLL_RATIO = 2


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _count(text: str, high: int) -> int:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise ValueError("not a whole number") from None
    if not 0 <= value <= high:
        raise ValueError(f"must be a whole number from 0 to {high}")
    return value


def _seconds(text: str, high: float) -> float:
    """A duration (``30``, ``1.5``, ``5m``, ``1h30m``) > 0 and <= ``high`` seconds."""
    from queuectl.durations import duration_seconds  # not at import: only `config set` parses

    try:
        value = duration_seconds(text)
    except ValueError as error:
        try:
            value = _number(text)  # also 1e3, as settings always took
        except ValueError:
            raise error from None
    if not 0 < value <= high:
        raise ValueError(f"must be a duration > 0 and <= {_show_seconds(high)}")
    return value


def _show_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _parse_max_retries(text: str) -> SettingValue:
    return _count(text, MAX_RETRIES)


def _parse_base(text: str) -> SettingValue:
    value = _number(text)
    if not 1 <= value <= MAX_BACKOFF_BASE:
        raise ValueError(f"must be a number from 1 to {MAX_BACKOFF_BASE:g}")
    return value


def _parse_backoff_max(text: str) -> SettingValue:
    return _seconds(text, MAX_BACKOFF)


def _parse_default_timeout(text: str) -> SettingValue:
    if text.strip().lower() in ("none", "null"):
        return None
    return _seconds(text, MAX_TIMEOUT)


def _parse_retention(text: str) -> SettingValue:
    if text.strip().lower() in ("none", "null"):
        return None
    return _seconds(text, MAX_RETENTION)


def _parse_poll_interval(text: str) -> SettingValue:
    return _seconds(text, MAX_POLL_INTERVAL)


def _parse_lease(text: str) -> SettingValue:
    return _seconds(text, MAX_LEASE)


def _parse_output_limit(text: str) -> SettingValue:
    value = _count(text, MAX_OUTPUT_LIMIT)
    if value < 1:
        raise ValueError(f"must be a whole number of bytes from 1 to {MAX_OUTPUT_LIMIT}")
    return value


class SettingSpec(Record):
    """One setting as the registry describes it: its key, parser, default and help."""

    __slots__ = ("key", "parse", "default", "help")  # noqa: RUF023 (field order)

    key: str
    parse: Callable[[str], SettingValue]
    default: SettingValue
    help: str

    def __init__(
        self, key: str, parse: Callable[[str], SettingValue], default: SettingValue, help: str
    ) -> None:
        set_field(self, "key", key)
        set_field(self, "parse", parse)
        set_field(self, "default", default)
        set_field(self, "help", help)


@record
class Settings(Record):
    """Typed settings, as a worker uses them; the class body is the settings registry.

    Each field is one setting: its type, its default (the only place a default is written),
    how its text is parsed and checked, and its help. A new setting is one line here.
    """

    max_retries: int = field(
        default=3, parse=_parse_max_retries, help="retries after the first attempt, for jobs that set none"
    )
    backoff_base: float = field(
        default=2.0, parse=_parse_base, help="retry n waits backoff_base ** n seconds"
    )
    backoff_max: float = field(
        default=3600.0, parse=_parse_backoff_max, help="the longest wait between retries"
    )
    default_timeout: float | None = field(
        default=None, parse=_parse_default_timeout, help="timeout of jobs that set none; none: no timeout"
    )
    poll_interval: float = field(
        default=0.5, parse=_parse_poll_interval, help="the slowest a worker is to notice due jobs and leases"
    )
    lease: float = field(
        default=30.0, parse=_parse_lease, help="how long a silent worker keeps its jobs (>= 2 poll intervals)"
    )
    output_limit: int = field(
        default=65536, parse=_parse_output_limit, help="bytes of stdout and of stderr kept per attempt"
    )
    retention: float | None = field(
        default=7 * 86400.0,
        parse=_parse_retention,
        help="workers delete completed and cancelled jobs finished longer ago; none: keep them",
    )

    @classmethod
    def from_stored(cls, stored: Mapping[str, str]) -> Settings:
        """Build from the store's raw text values; a bad stored value falls back to the default."""
        values: dict[str, Any] = {}
        for key, text in stored.items():
            if key in SETTINGS:
                try:
                    values[key] = SETTINGS[key].parse(text)
                except ValueError:
                    continue
        return cls(**values)

    def to_dict(self) -> dict[str, SettingValue]:
        return {name: getattr(self, name) for name in self.__slots__}


#: The registry by key, derived from ``Settings``.
SETTINGS: dict[str, SettingSpec] = {
    info.name: SettingSpec(info.name, info.meta["parse"], info.default, info.meta["help"])
    for info in fields(Settings)
}


def canonical_key(key: str) -> str:
    """The setting's name as queuectl spells it: ``max-retries`` is ``max_retries``.

    ``InvalidSetting`` for an unknown key, naming the valid ones.
    """
    canonical = key.strip().lower().replace("-", "_")
    if canonical not in SETTINGS:
        import difflib  # only to word a refusal

        close = difflib.get_close_matches(canonical, SETTINGS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InvalidSetting(f"unknown config key {key!r}{hint}; valid keys: {', '.join(SETTINGS)}")
    return canonical


def parse_setting(key: str, text: str) -> SettingValue:
    """Validate ``text`` for ``key``; raise ``InvalidSetting`` naming the key and what is valid."""
    key = canonical_key(key)
    spec = SETTINGS[key]
    try:
        return spec.parse(text)
    except ValueError as error:
        raise InvalidSetting(f"bad value {text!r} for {key}: {error}; {key} is {spec.help}") from None


def check_together(settings: Settings, changed: str | None = None) -> None:
    """Refuse settings that cannot work together: a lease its healthy worker could not keep.

    ``changed``: the key being set, whose values that would work the message names first.
    """
    lease, poll = settings.lease, settings.poll_interval
    if lease >= LEASE_POLL_RATIO * poll:
        return
    rule = f"lease must be at least {LEASE_POLL_RATIO} x poll_interval"
    longest_poll = _show_seconds(lease / LEASE_POLL_RATIO)
    shortest_lease = _show_seconds(LEASE_POLL_RATIO * poll)
    if changed == "poll_interval":
        raise InvalidSetting(
            f"poll_interval {_show_seconds(poll)} is too long for lease {_show_seconds(lease)}: {rule};"
            f" set poll_interval to {longest_poll} or less, or first set lease to {shortest_lease} or more"
        )
    raise InvalidSetting(
        f"lease {_show_seconds(lease)} is too short for poll_interval {_show_seconds(poll)}: {rule};"
        f" set lease to {shortest_lease} or more, or first set poll_interval to {longest_poll} or less"
    )


def setting_texts(stored: Mapping[str, str]) -> dict[str, str]:
    """Every setting as text, in the registry's order: as stored (as it was given) where it
    parses, else its default's (``format_setting``), the value ``Settings.from_stored`` takes."""
    texts = {}
    for key, spec in SETTINGS.items():
        text = stored.get(key)
        if text is not None:
            try:
                spec.parse(text)
            except ValueError:
                text = None
        texts[key] = format_setting(spec.default) if text is None else text
    return texts


def stored_text(value: SettingValue, text: str) -> str:
    """What is stored for a setting given as ``text`` (already parsed to ``value``): the text as
    given, stripped, so that ``config get`` shows it as the user wrote it (``5m``, not ``300``);
    ``none`` for no value."""
    return "none" if value is None else text.strip()


def format_setting(value: SettingValue) -> str:
    """A typed value as text: the form of a default that was never set (``setting_texts``)."""
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --- where the store lives -------------------------------------------------------------

DB_ENV = "QUEUECTL_DB"


def default_target() -> str:
    """``$QUEUECTL_DB``, else ``$XDG_DATA_HOME/queuectl/queue.db`` (``~/.local/share``)."""
    from_env = os.environ.get(DB_ENV)
    if from_env:
        return from_env
    from pathlib import Path  # not at import: `import queuectl` stays light

    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(data_home) / "queuectl" / "queue.db")


def is_postgres_target(target: str) -> bool:
    """Whether ``target`` names a PostgreSQL store; a malformed URL is ``InvalidInput`` (exit 2)."""
    if not target.startswith(("postgresql:", "postgres:")):
        return False
    check_postgres_target(target)
    return True


def check_postgres_target(url: str) -> None:
    """Refuse a PostgreSQL URL without a host or database, or with a bad port.

    Said here rather than left to the driver, which would fill the gaps from ``PG*`` variables
    and the local socket: ``postgresql://`` alone must not create tables in some default database.
    """
    from urllib.parse import parse_qs, urlsplit

    shown = _redacted(url)
    usage = "use postgresql://USER@HOST:PORT/DATABASE"
    if not url.startswith(("postgresql://", "postgres://")):
        raise InvalidInput(f"bad store target {shown}: {usage}")
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
    except ValueError as error:
        raise InvalidInput(f"bad store target {shown}: {error}; {usage}") from None
    for host_port in parts.netloc.rpartition("@")[2].split(","):
        host, port = _host_and_port(host_port)
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise InvalidInput(f"bad store target {shown}: the port must be a number from 1 to 65535")
        if not host and not query.get("host"):
            raise InvalidInput(f"bad store target {shown}: the host is missing; {usage}")
    if not parts.path.strip("/") and not (query.get("dbname") or query.get("database")):
        raise InvalidInput(f"bad store target {shown}: the database is missing; {usage}")


def _host_and_port(text: str) -> tuple[str, str | None]:
    if text.startswith("["):  # [::1]:5432
        host, _, rest = text[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    host, colon, port = text.partition(":")
    return host, port if colon else None


def _redacted(url: str) -> str:
    """The URL for a message, without its password."""
    head, at, tail = url.rpartition("@")
    if not at:
        return repr(url)
    scheme, _, credentials = head.partition("://")
    user = credentials.partition(":")[0]
    return repr(f"{scheme}://{user}@{tail}")


def sqlite_path(target: str) -> Path:
    """The file of a SQLite target: a plain path or ``sqlite:///path``."""
    from pathlib import Path  # not at import: `import queuectl` stays light

    if target.startswith("sqlite:"):
        rest = target[len("sqlite://") :] if target.startswith("sqlite://") else ""
        if not rest.startswith("/") or not rest.strip("/"):
            usage = "use sqlite:///absolute/path or a plain path"
            raise InvalidInput(f"bad store target {target!r}: the path is missing; {usage}")
        return Path(rest)
    if "://" in target:
        raise InvalidInput(f"unknown store target {target!r}: use a path, sqlite:///path or postgresql://...")
    if not target.strip():
        raise InvalidInput("the store target is empty")
    return Path(target).expanduser()
