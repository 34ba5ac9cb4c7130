#!/usr/bin/env python3
"""Load generator of docs/benchmarks.md: ``scripts/bench.py MODE [options]``.

Every mode is in ``scripts/benchkit/`` (read its docstring to add one);
``scripts/bench.py MODE --help`` lists the options of a mode.  Result rows
are JSON objects, one per line, on stdout.
"""

from __future__ import annotations

import sys

from benchkit.main import main

if __name__ == "__main__":
    sys.exit(main())
