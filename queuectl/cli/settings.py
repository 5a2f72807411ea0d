"""Persisted settings: ``config show``, ``config get KEY``, ``config set KEY VALUE``.

Keys may be written with hyphens (``max-retries``); queuectl shows them as it spells them
(``max_retries``).
"""

from __future__ import annotations

from typing import Any

import click

from queuectl.cli import render
from queuectl.cli.run import examples, json_option, store_exists, with_queue
from queuectl.config import SETTINGS, Settings, canonical_key, check_together, parse_setting

KEYS_HELP = ", ".join(SETTINGS)


@click.group("config")
def config() -> None:
    """Persisted settings, shared by every worker of the store."""


@config.command("show", epilog=examples("queuectl config show", "queuectl config show --json"))
@json_option
def config_show(as_json: bool) -> None:
    """Every setting with its current value.

    Durations are shown as they were given: 5m stays 5m (--json: seconds).
    """
    if as_json:
        render.print_json(with_queue(lambda q: q.settings()).to_dict())
    else:
        render.settings(with_queue(lambda q: q.setting_texts()))


@config.command(
    "get",
    short_help="Print one setting's value.",
    epilog=f"Keys: {KEYS_HELP}.\n\n"
    + examples("queuectl config get max_retries", "queuectl config get default_timeout --json"),
)
@click.argument("key", metavar="KEY")
@json_option
def config_get(key: str, as_json: bool) -> None:
    """Print one setting's value (`none` for no value; --json prints it typed)."""
    name = canonical_key(key)
    if as_json:
        render.print_json(with_queue(lambda q: q.settings()).to_dict()[name])
    else:
        click.echo(with_queue(lambda q: q.setting_texts())[name])


@config.command(
    "set",
    short_help="Validate and persist one setting.",
    epilog=f"Keys: {KEYS_HELP}.\n\n"
    + examples(
        "queuectl config set max_retries 5",
        "queuectl config set default_timeout 10m",
        "queuectl config set default_timeout none",
    ),
    # `config set lease -1` is a bad value, not an unknown option.
    context_settings={"ignore_unknown_options": True},
)
@click.argument("key", metavar="KEY")
@click.argument("value", metavar="VALUE")
def config_set(key: str, value: str) -> None:
    """Validate and persist one setting; running workers pick it up within a poll interval."""
    name = canonical_key(key)
    # Refuse before the store is opened, so that a refused command writes nothing: the value
    # alone, and with the defaults when there is no store yet to hold other values.
    parsed = parse_setting(name, value)
    if not store_exists():
        values: dict[str, Any] = {name: parsed}
        check_together(Settings(**values), changed=name)
    with_queue(lambda q: q.set_setting(name, value))
