"""``python -m fastmi.evaluate``: the trained InfoGAN's evaluation, which lives with the
trainer in :mod:`fastmi.train.evaluate` (its docstring says what it measures)."""

from .train.evaluate import main

if __name__ == "__main__":
    main()
