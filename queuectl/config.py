"""Persisted settings (key, parser, default, help) and where the store lives."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from queuectl.errors import InvalidInput, InvalidSetting
from queuectl.records import Record, set_field

if TYPE_CHECKING:
    from pathlib import Path

SettingValue = int | float | None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _parse_count(text: str) -> SettingValue:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise ValueError("not a whole number") from None
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _parse_positive_seconds(text: str) -> SettingValue:
    value = _number(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _parse_optional_seconds(text: str) -> SettingValue:
    if text.strip().lower() in ("none", "null"):
        return None
    return _parse_positive_seconds(text)


def _parse_base(text: str) -> SettingValue:
    value = _number(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def _parse_output_limit(text: str) -> SettingValue:
    value = _parse_count(text)
    assert value is not None
    if value < 1 or value > 64 * 1024 * 1024:
        raise ValueError("must be from 1 to 67108864 bytes")
    return value


class SettingSpec(Record):
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


SETTINGS: dict[str, SettingSpec] = {
    spec.key: spec
    for spec in (
        SettingSpec("max_retries", _parse_count, 3, "retries after the first attempt (int >= 0)"),
        SettingSpec("backoff_base", _parse_base, 2.0, "retry n waits backoff_base ** n seconds (>= 1)"),
        SettingSpec("backoff_max", _parse_positive_seconds, 3600.0, "longest wait between retries (s > 0)"),
        SettingSpec(
            "default_timeout", _parse_optional_seconds, None, "timeout of jobs that set none (s > 0 or none)"
        ),
        SettingSpec(
            "poll_interval", _parse_positive_seconds, 0.5, "slowest a worker is to notice due jobs (s > 0)"
        ),
        SettingSpec(
            "lease", _parse_positive_seconds, 30.0, "how long a silent worker keeps its jobs (s > 0)"
        ),
        SettingSpec(
            "output_limit", _parse_output_limit, 65536, "bytes of stdout/stderr tail kept per attempt"
        ),
    )
}


def parse_setting(key: str, text: str) -> SettingValue:
    """Validate ``text`` for ``key``; raise ``InvalidSetting`` naming the key and what is valid."""
    spec = SETTINGS.get(key)
    if spec is None:
        raise InvalidSetting(f"unknown config key {key!r}; valid keys: {', '.join(SETTINGS)}")
    try:
        return spec.parse(text)
    except ValueError as error:
        raise InvalidSetting(f"bad value {text!r} for {key}: {error} ({spec.help})") from None


class Settings(Record):
    """Typed settings, as a worker uses them."""

    __slots__ = (  # noqa: RUF023 (field order)
        "max_retries",
        "backoff_base",
        "backoff_max",
        "default_timeout",
        "poll_interval",
        "lease",
        "output_limit",
    )

    max_retries: int
    backoff_base: float
    backoff_max: float
    default_timeout: float | None
    poll_interval: float
    lease: float
    output_limit: int

    def __init__(
        self,
        *,
        max_retries: int = 3,
        backoff_base: float = 2.0,
        backoff_max: float = 3600.0,
        default_timeout: float | None = None,
        poll_interval: float = 0.5,
        lease: float = 30.0,
        output_limit: int = 65536,
    ) -> None:
        set_field(self, "max_retries", max_retries)
        set_field(self, "backoff_base", backoff_base)
        set_field(self, "backoff_max", backoff_max)
        set_field(self, "default_timeout", default_timeout)
        set_field(self, "poll_interval", poll_interval)
        set_field(self, "lease", lease)
        set_field(self, "output_limit", output_limit)

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


def format_setting(value: SettingValue) -> str:
    """The text form stored and printed by ``config get``."""
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
    return target.startswith(("postgresql://", "postgres://"))


def sqlite_path(target: str) -> Path:
    """The file of a SQLite target: a plain path or ``sqlite:///path``."""
    from pathlib import Path  # not at import: `import queuectl` stays light

    if target.startswith("sqlite://"):
        rest = target[len("sqlite://") :]
        if not rest.startswith("/"):
            raise InvalidInput(f"bad store target {target!r}: use sqlite:///absolute/path or a plain path")
        return Path(rest)
    if "://" in target:
        raise InvalidInput(f"unknown store target {target!r}: use a path, sqlite:///path or postgresql://...")
    if not target.strip():
        raise InvalidInput("the store target is empty")
    return Path(target).expanduser()
