"""The oracle comparison (fastmi/infogan/testing.py) catches planted bugs that the suite's
old 16-bit tolerances let pass.

Before issue 12, bfloat16 and float16 results were held to rtol = 1e-2 and atol = 1e-2 x
max(magnitude, 1), losses, stats and gradients alike. A gradient is about 1/B, so that
atol is larger than the whole tensor at B = 1,024: a zeroed gradient, a flipped sign or a
dropped term passed. Each case below plants one such bug in a real backend's result and
checks that the old rule accepts it (so the case is a real test of the change) and the
current one rejects it.
"""

import pytest
import torch

from fastmi.infogan.testing import MNIST, RICH, Result, assert_matches_oracle, evaluate, oracle, random_case, \
    random_upstream


def old_rule(result: Result, want: Result) -> None:
    """The pre-issue-12 check of 16-bit results, kept here only to show what it missed."""
    for got, value in [*zip(result.outputs.values(), want.outputs.values()),
                       *((result.grads[k], v) for k, v in want.grads.items() if v is not None)]:
        want64 = value.double()
        finite = want64[torch.isfinite(want64)]
        mag = finite.abs().max().item() if finite.numel() else 0.0
        torch.testing.assert_close(got.double(), want64, rtol=1e-2, atol=1e-2 * max(mag, 1.0), equal_nan=True)


def flip_sign_of_one_categorical_row(result: Result, spec) -> None:
    """Row 1's softmax gradient with the wrong sign (row 1 is not a confident row)."""
    result.grads["q"][1, :sum(spec.categorical)] *= -1


def zero_real_grad(result: Result) -> None:
    result.grads["real_logits"].zero_()


def drop_bernoulli_from_generator_grad(result: Result, spec) -> None:
    """The bernoulli columns' gradient lost one of its three upstream terms (gG)."""
    start = sum(spec.categorical)
    result.grads["q"][:, start:start + spec.bernoulli] *= 0.5


def shift_jsd_bound(result: Result) -> None:
    """A float32 stat off by 1e-3 nats (an epsilon inside a log, say)."""
    result.outputs["jsd_bound"] += 1e-3


BUGS = {
    "flipped-sign": flip_sign_of_one_categorical_row,
    "zeroed-real-grad": lambda r, spec: zero_real_grad(r),
    "halved-bernoulli-grad": drop_bernoulli_from_generator_grad,
    "shifted-jsd-bound": lambda r, spec: shift_jsd_bound(r),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("bug", BUGS)
def test_planted_bug_passes_the_old_rule_and_fails_the_new(bug, dtype):
    spec = RICH if bug == "halved-bernoulli-grad" else MNIST
    case = random_case(spec, 1024, dtype=dtype, seed=3, confident=True)
    upstream = random_upstream(3)
    want = oracle(case, spec, upstream)
    got = evaluate(case, spec, "cpu", upstream)
    assert_matches_oracle(got, want, dtype, case, upstream)   # the unplanted result passes
    BUGS[bug](got, spec)
    old_rule(got, want)                                       # the old rule let the bug through
    with pytest.raises(AssertionError):
        assert_matches_oracle(got, want, dtype, case, upstream)
