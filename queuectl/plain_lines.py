"""The fast path of ``enqueue-file``: JSON Lines whose every record is ``{"command": "..."}``.

Parsing and validating such a file one record at a time cost more than inserting it. Two
regular-expression passes over the whole text recognise the common shape instead: each line
blank or one object with the single key ``command`` whose string has no escapes. Anything else
(other fields, escapes, odd layout, a bad record) returns ``None`` and takes the full path in
``validation``, which words every refusal. For what it accepts this gives the jobs the full
path would: tests/test_enqueue_fast.py compares the two.
"""

from __future__ import annotations

import re

from queuectl.job_fields import MAX_COMMAND_BYTES

__all__ = ("plain_commands",)

# Possessive quantifiers and atomic groups: nothing here needs backtracking, and without it
# the check of a 100,000-line file takes a quarter of the time.
_SPACE = r"[ \t\r]*+"  # JSON whitespace within a line ("\n" ends the line)
#: The inside of a JSON string without escapes: no quote, backslash or control character.
_CHARS = r'[^"\\\x00-\x1f]*+'
_KEY = r'"command"' + _SPACE + ":" + _SPACE
_OBJECT = r"\{" + _SPACE + _KEY + f'"{_CHARS}"' + _SPACE + r"\}" + _SPACE
_LINE = _SPACE + f"(?>{_OBJECT})?"
_DOCUMENT = re.compile(f"(?>{_LINE}\n)*+{_LINE}")
_COMMAND = re.compile(_KEY + f'"({_CHARS})"')
_SURROGATE = re.compile("[\ud800-\udfff]")  # not from decoded UTF-8, but a caller may pass any str
#: A UTF-8 character has at most 4 bytes: a command this long cannot be too long.
_SURELY_SHORT = MAX_COMMAND_BYTES // 4


def plain_commands(text: str) -> list[str] | None:
    """The commands of ``text`` if it is all plain records, else ``None``."""
    text = text.removeprefix("\ufeff")  # as validation.parse_jobs_document does
    if _DOCUMENT.fullmatch(text) is None:
        return None
    if not text.isascii() and _SURROGATE.search(text) is not None:
        return None
    commands = _COMMAND.findall(text)  # the quote excluded, "command" cannot occur inside a value
    if not commands or max(map(len, commands)) > _SURELY_SHORT or not all(map(str.strip, commands)):
        return None  # nothing to enqueue, or a command to refuse or measure: the full path does it
    return commands
