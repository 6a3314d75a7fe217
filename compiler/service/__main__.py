"""`python -m compiler.service [--db URL] [--host H] [--port P] [--token T]`: `kiln serve`."""

from __future__ import annotations

import sys

from compiler.cli import app

if __name__ == "__main__":
    sys.exit(app(["serve", *sys.argv[1:]], prog_name="kiln"))
