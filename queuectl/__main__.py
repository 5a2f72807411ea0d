"""The ``queuectl`` command: ``python -m queuectl`` and the console script both run ``run()``."""

from __future__ import annotations

import sys


def run() -> None:
    """Import the command line, then run it; a Ctrl-C at any point ends it quietly (exit 130).

    ``main()`` turns errors and interrupts into exit codes once it runs; this covers the imports
    before it (click and queuectl's own, some 50 ms), where an interrupt would show a traceback.
    """
    try:
        from queuectl.cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
