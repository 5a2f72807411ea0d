"""Persisted settings: ``config show``, ``config get KEY``, ``config set KEY VALUE``."""

from __future__ import annotations

import click

from queuectl.cli import render
from queuectl.cli.run import json_option, with_queue
from queuectl.config import SETTINGS, parse_setting
from queuectl.errors import InvalidSetting

KEYS_HELP = ", ".join(SETTINGS)


def _check_key(key: str) -> None:
    if key not in SETTINGS:
        raise InvalidSetting(f"unknown config key {key!r}; valid keys: {KEYS_HELP}")


@click.group("config")
def config() -> None:
    """Persisted settings, shared by every worker of the store."""


@config.command("show")
@json_option
def config_show(as_json: bool) -> None:
    """Every setting with its current value."""
    render.settings(with_queue(lambda q: q.settings()), as_json=as_json)


@config.command("get")
@click.argument("key", metavar="KEY")
@json_option
def config_get(key: str, as_json: bool) -> None:
    """Print one setting's value (`none` for no value; --json prints it typed)."""
    _check_key(key)
    settings = with_queue(lambda q: q.settings())
    render.setting(settings.to_dict()[key], as_json=as_json)


@config.command(
    "set",
    epilog=f"Keys: {KEYS_HELP}.",
    # `config set lease -1` is a bad value, not an unknown option.
    context_settings={"ignore_unknown_options": True},
)
@click.argument("key", metavar="KEY")
@click.argument("value", metavar="VALUE")
def config_set(key: str, value: str) -> None:
    """Validate and persist one setting; running workers pick it up within a poll interval."""
    parse_setting(key, value)  # refuse before the store is opened: a refused command writes nothing
    with_queue(lambda q: q.set_setting(key, value))
