"""Durations as users write them, in one place: ``90``, ``1.5``, ``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``.

Every duration queuectl takes (a job's ``timeout`` and ``delay``, the duration settings,
``--timeout``, ``--idle-timeout``, ``--grace``, ...) goes through ``duration_seconds``, so
that one spelling works everywhere. Plain code, no imports: the short-lived ``enqueue``
process uses it.
"""

from __future__ import annotations

import re

__all__ = ("DURATION_FORMS", "duration_seconds")

DURATION_FORMS = "seconds (30, 1.5) or a number with units s, m, h, d (30s, 5m, 1.5h, 1d, 1h30m)"

_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
# Units largest first, each at most once: "1h30m" but not "30m1h" or "1m1m".
_PATTERN = rf"([+-]?)(?:({_NUMBER})|(?:({_NUMBER})d)?(?:({_NUMBER})h)?(?:({_NUMBER})m)?(?:({_NUMBER})s)?)"


def duration_seconds(text: str) -> float:
    """Seconds in ``text``; ``ValueError`` for anything else. The sign is kept: callers bound it.

    Units are lowercase: ``5M`` could as well mean months. May return ``inf`` for absurd
    numbers; callers refuse it with their range check.
    """
    match = re.fullmatch(_PATTERN, text.strip())
    if match is None or not any(match.groups()[1:]):
        raise ValueError(f"not a duration: use {DURATION_FORMS}")
    sign, plain, *parts = match.groups()
    if plain is not None:
        seconds = float(plain)
    else:
        seconds = sum(
            float(part) * unit for part, unit in zip(parts, _UNIT_SECONDS.values(), strict=True) if part
        )
    return -seconds if sign == "-" else seconds
