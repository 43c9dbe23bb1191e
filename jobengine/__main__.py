"""python -m jobengine: the same command line as jobctl.

Owns: nothing but the entry point.  Never does: anything cli.py does not."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
