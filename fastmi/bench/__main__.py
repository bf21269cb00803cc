"""``python -m fastmi.bench report ...``: see :mod:`fastmi.bench.report`."""

import sys

from .report import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not argv or argv[0] != "report":
        print("usage: python -m fastmi.bench report RESULTS.json [MORE.json ...] --out DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(argv[1:]))
