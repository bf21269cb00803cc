"""``python -m fastmi.train``: see :mod:`fastmi.train.cli`."""

from .cli import main

if __name__ == "__main__":
    main()
