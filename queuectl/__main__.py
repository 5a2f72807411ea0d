"""``python -m queuectl`` is the same program as ``queuectl``."""

from queuectl.cli import main

if __name__ == "__main__":
    main()
