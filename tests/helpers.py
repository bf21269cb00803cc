"""Shared test helpers: fastmi.infogan.testing (random inputs, the float64 oracle,
per-dtype tolerances), which ``python -m fastmi.validate`` runs on a user's GPU too."""

from fastmi.infogan.testing import (BERN_ONLY, CONT_ONLY, FLOAT32, HUGE, MNIST, MULTI, RICH, TOLERANCES, WIDE,  # noqa: F401
                                    Case, Result, assert_close, assert_matches_oracle, check_backend, evaluate,
                                    oracle, random_case, random_upstream)
