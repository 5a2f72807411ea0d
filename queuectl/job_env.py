"""A job's ``cwd`` and ``env``: where its command runs and what it adds to the environment.

The checks of the two fields (``check_cwd``, ``check_env``, each in ``job_fields.CHECKS``) and
what ``enqueue --cwd DIR --env NAME=VALUE`` options become before they are checked. Whether the
directory exists is for the worker to find out (another host may have it); the limits are the
ones Linux puts on a working directory and on one ``NAME=VALUE`` string.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from queuectl.errors import InvalidInput
from queuectl.field_values import MAX_COMMAND_BYTES, check_text, clip, show

__all__ = (
    "ENV_NAME_RULE",
    "MAX_CWD_BYTES",
    "MAX_ENV_ENTRIES",
    "MAX_ENV_ENTRY_BYTES",
    "absolute_cwd",
    "check_cwd",
    "check_env",
    "check_env_name",
    "env_from_options",
)

#: Linux's PATH_MAX counts the terminating NUL: no longer path can be a working directory.
MAX_CWD_BYTES = 4095
MAX_ENV_ENTRIES = 100
#: Each ``NAME=VALUE`` string of a process's environment is limited as one argv string is.
MAX_ENV_ENTRY_BYTES = MAX_COMMAND_BYTES
ENV_NAME_RULE = "letters, digits and _, not starting with a digit"


def check_cwd(value: object) -> str | None:
    """An absolute directory path, kept as given (whether it exists is for the worker to find out:
    another host may have it); ``None`` for the worker's own working directory."""
    if value is None:
        return None
    text = check_text(value, "cwd")
    if "\0" in text:
        raise InvalidInput("cwd must not contain a NUL character (\\u0000): no path can hold one")
    if not text.startswith("/"):
        raise InvalidInput(f"cwd must be an absolute path (starting with /), got {show(text)}")
    size = len(text) if len(text) > MAX_CWD_BYTES else len(text.encode("utf-8"))
    if size > MAX_CWD_BYTES:
        raise InvalidInput(
            f"cwd is {size} bytes, at most {MAX_CWD_BYTES} bytes (Linux's PATH_MAX) are allowed"
        )
    return text


def check_env(value: object) -> dict[str, str] | None:
    """Variables added to the command's environment: an object of up to ``MAX_ENV_ENTRIES``
    strings by name; ``None`` for none. A new dict, in the order given."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(f'env must be an object of strings, e.g. {{"NAME": "value"}}, got {show(value)}')
    if len(value) > MAX_ENV_ENTRIES:
        raise InvalidInput(f"env has {len(value)} entries, at most {MAX_ENV_ENTRIES} are allowed")
    variables: dict[str, str] = {}
    for name, text in value.items():
        check_env_name(name)
        label = f"env {clip(name)}"
        if not isinstance(text, str):
            raise InvalidInput(f"{label} must be a string, got {show(text)}")
        check_text(text, label)
        if "\0" in text:
            raise InvalidInput(f"{label} must not contain a NUL character (\\u0000)")
        size = len(name) + 1 + (len(text) if len(text) > MAX_ENV_ENTRY_BYTES else len(text.encode("utf-8")))
        if size > MAX_ENV_ENTRY_BYTES:
            raise InvalidInput(
                f"{label} is {size} bytes as NAME=VALUE, at most {MAX_ENV_ENTRY_BYTES} bytes are allowed"
                " (Linux's MAX_ARG_STRLEN); put a long value in a file"
            )
        variables[name] = text
    return variables


def check_env_name(name: object) -> str:
    """A variable name: ``[A-Za-z_][A-Za-z0-9_]*``, what every shell can use."""
    if not isinstance(name, str):
        raise InvalidInput(f"env names must be strings, got {show(name)}")
    # ASCII letters, digits and _ without ``re``: isalnum() alone would take other scripts' letters.
    valid = name.isascii() and name.replace("_", "a").isalnum() and not name[0].isdigit()
    if not valid:
        raise InvalidInput(f"env name {show(name)} is not valid: use {ENV_NAME_RULE}")
    return name


def env_from_options(texts: Sequence[str]) -> dict[str, str]:
    """``{"NAME": "VALUE"}`` from ``--env NAME=VALUE`` texts (the value may hold ``=``)."""
    variables: dict[str, str] = {}
    for text in texts:
        name, equals, value = text.partition("=")
        if not equals:
            raise InvalidInput(f"--env takes NAME=VALUE, got {show(text)}")
        check_env_name(name)
        if name in variables:
            raise InvalidInput(f"--env {clip(name)} is given twice")
        variables[name] = value
    return variables


def absolute_cwd(text: str, field: str) -> str:
    """A directory given on the command line, relative to the current one (as a shell takes it)."""
    if not text or text.startswith("/") or "\0" in text:
        return text  # the check refuses an empty path and a NUL in its own words
    try:
        return os.path.abspath(text)
    except OSError as error:  # the current directory was deleted
        raise InvalidInput(
            f"cannot make --cwd {show(text)} absolute: {error.strerror}; give an absolute path"
        ) from None
