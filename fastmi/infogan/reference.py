"""The composite-PyTorch reference: the eager baseline and the oracle of the tests.

It computes ARCHITECTURE.md sections 3 and 4 with stock PyTorch ops in the compute
dtype (float32, or float64 for float64 inputs); autograd derives section 5.

    softplus(x) = -logsigmoid(-x)
    a_i  = t softplus(-r_i) + (1 - t) softplus(r_i)      b_j = softplus(f_j)
    g_j  = softplus(-f_j)  (non-saturating)  |  -softplus(f_j)  (minimax)
    e_jk = logsumexp(l_jk) - l_jk[c_jk]                  (cross entropy)
    u_jb = softplus(-v) if c = 1 else softplus(v)
    h_jd = 0.5 log(2 pi) + 0.5 s + 0.5 (c - mu)^2 exp(-s)

    L_D_adv = R(a) + R(b),  L_G_adv = R(g)
    L_info  = lambda_cat (sum_k R(e_k) + sum_b R(u_b)) + lambda_cont sum_d R(h_d)
    discriminator = L_D_adv + L_info,  generator = L_G_adv + L_info,  info = L_info

R is the mean over rows (or the sum, for reduction="sum"). The stats always use means.

Infinite inputs (docs/ARCHITECTURE.md, "Infinities"): every term takes its limit. A term
of weight 0 (t = 1 or t = 0 in a_i) is left out, never multiplied by 0; the categorical
NLL of a row with +inf logits is log(n) when its code's logit is one of the n at +inf and
+inf otherwise, and its gradient the softmax at that limit (uniform over them) minus the
one-hot; the Gaussian terms are their formula in IEEE arithmetic.

Invalid codes: on CPU tensors the reference raises (as the CPU kernel does); on CUDA
tensors, where checking would sync, an invalid categorical index or bernoulli value
makes its term and that term's gradient NaN, as the GPU kernels do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .inputs import LossInputs, check_code_values, compute_dtype
from .outputs import MIStats
from .problem import Problem

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
LOG2 = math.log(2.0)


def devices() -> tuple:
    return ("cpu", "cuda")


def is_available():
    return None


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(-x)


def _nan_unless(ok: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """1 where ``ok``, NaN elsewhere: a factor that makes an invalid code's term and its
    gradient NaN (a where() would leave that gradient 0)."""
    return torch.where(ok, torch.ones((), dtype=like.dtype, device=like.device),
                       torch.full((), math.nan, dtype=like.dtype, device=like.device))


class _NLLAtPosInf(torch.autograd.Function):
    """The categorical NLL of rows whose max logit is +inf, at the limit: log(n) when the
    code's logit is one of the n at +inf, else +inf; gradient (uniform over the +inf
    logits) - onehot. Rows outside ``rows`` give 0 and no gradient. (autograd cannot
    differentiate through an infinite value; written in the setup_context form, so that
    torch.func transforms run the reference too.)"""

    generate_vmap_rule = True

    @staticmethod
    def forward(logits, target, rows):
        at_inf = (logits == math.inf) & rows[..., None]
        count = at_inf.sum(-1).to(logits.dtype)
        hit = at_inf.gather(-1, target[..., None]).squeeze(-1)
        value = torch.where(hit, torch.log(count.clamp(min=1)), math.inf)
        return torch.where(rows, value, 0.0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        logits, target, rows = inputs
        ctx.save_for_backward(logits, target, rows)

    @staticmethod
    def backward(ctx, grad):
        logits, target, rows = ctx.saved_tensors
        at_inf = ((logits == math.inf) & rows[..., None]).to(grad.dtype)
        soft = at_inf / at_inf.sum(-1, keepdim=True).clamp(min=1)
        onehot = F.one_hot(target, logits.shape[-1]).to(grad.dtype) * rows[..., None].to(grad.dtype)
        return grad[..., None] * (soft - onehot), None, None


def _categorical_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """e = logsumexp(l) - l[c] per row: cross entropy, at the limit for +inf logits, NaN
    (value and gradient) for an index outside [0, K)."""
    size = logits.shape[1]
    valid = (target >= 0) & (target < size)
    safe_target = torch.where(valid, target, 0)
    at_inf = (logits == math.inf).any(1)
    # F.cross_entropy sees finite rows only (an inf row would make its backward NaN), the
    # +inf rows go to their limit
    finite = F.cross_entropy(torch.where(at_inf[:, None], 0.0, logits), safe_target, reduction="none")
    e = torch.where(at_inf, _NLLAtPosInf.apply(logits, safe_target, at_inf), finite)
    return e * _nan_unless(valid, e)


def terms(inputs: LossInputs, problem: Problem) -> dict:
    """The per-row terms of section 3, in the compute dtype; a kind that is absent is None.

    Returns a dict with ``real_neg`` = softplus(-r) [Br], ``real_pos`` = softplus(r),
    ``fake_pos`` = softplus(f) [Bf], ``fake_neg`` = softplus(-f), ``cat`` = e [Bf, m],
    ``bern`` = u [Bf, nb] and ``cont`` = h [Bf, n].
    """
    acc = compute_dtype(inputs.q.dtype)
    q = inputs.q.to(acc)
    out = dict.fromkeys(("real_neg", "real_pos", "fake_pos", "fake_neg", "cat", "bern", "cont"))
    if inputs.real is not None:
        r = inputs.real.to(acc)
        out["real_neg"], out["real_pos"] = _softplus(-r), _softplus(r)
    if inputs.fake is not None:
        f = inputs.fake.to(acc)
        out["fake_pos"], out["fake_neg"] = _softplus(f), _softplus(-f)
    col = 0
    if problem.cat_sizes:
        nll = []
        for k, size in enumerate(problem.cat_sizes):
            nll.append(_categorical_nll(q[:, col:col + size], inputs.categorical[:, k].long()))
            col += size
        out["cat"] = torch.stack(nll, dim=1)
    nb, n = problem.n_bernoulli, problem.n_continuous
    if nb:
        v, c = q[:, col:col + nb], inputs.bernoulli
        out["bern"] = torch.where(c > 0.5, _softplus(-v), _softplus(v)) * _nan_unless((c == 0) | (c == 1), v)
        col += nb
    if n:
        mu = q[:, col:col + n]
        if problem.learned_std:
            s = q[:, col + n:col + 2 * n]
            inv_var = torch.exp(-s)
        else:
            s = torch.full_like(mu, problem.fixed_logvar)
            inv_var = math.exp(-problem.fixed_logvar)
        out["cont"] = HALF_LOG_2PI + 0.5 * s + 0.5 * (inputs.continuous - mu).square() * inv_var
    return out


def loss(inputs: LossInputs, problem: Problem):
    """Returns ``(discriminator, generator, info, MIStats)`` per the module docstring."""
    if not torch.compiler.is_compiling():  # the check syncs; a compiled graph must not break on it
        check_code_values(inputs, problem)
    t = terms(inputs, problem)
    acc = compute_dtype(inputs.q.dtype)
    zero = inputs.q.new_zeros((), dtype=acc)
    nan = inputs.q.new_full((), math.nan, dtype=acc)

    def reduce(x):
        return x.sum(0) if problem.sum_reduction else x.mean(0)

    tl = problem.real_label
    d_adv = zero
    if t["real_neg"] is not None:  # a term of weight 0 is left out: 0 * softplus(+inf) is NaN
        real = t["real_neg"] if tl == 1.0 else t["real_pos"] if tl == 0.0 else tl * t["real_neg"] + (1.0 - tl) * t[
            "real_pos"]
        d_adv = d_adv + reduce(real)
    g_adv = zero
    if t["fake_pos"] is not None:
        d_adv = d_adv + reduce(t["fake_pos"])
        g_adv = reduce(-t["fake_pos"] if problem.minimax else t["fake_neg"])
    info = zero
    if t["cat"] is not None:
        info = info + problem.lambda_cat * reduce(t["cat"]).sum()
    if t["bern"] is not None:
        info = info + problem.lambda_cat * reduce(t["bern"]).sum()
    if t["cont"] is not None:
        info = info + problem.lambda_cont * reduce(t["cont"]).sum()

    with torch.no_grad():
        if t["real_neg"] is not None and t["fake_pos"] is not None:
            jsd = LOG2 - 0.5 * (t["real_neg"].mean() + t["fake_pos"].mean())
        else:
            jsd = nan
        if t["cat"] is not None:
            log_k = torch.tensor([math.log(k) for k in problem.cat_sizes], dtype=acc, device=zero.device)
            mi_cat = log_k - t["cat"].mean(0)
        else:
            mi_cat = zero.new_empty((0,))
        mi_bern = problem.n_bernoulli * LOG2 - t["bern"].mean(0).sum() if t["bern"] is not None else nan
        mi_cont = (problem.n_continuous * problem.prior_entropy - t["cont"].mean(0).sum()
                   if t["cont"] is not None else nan)
    return d_adv + info, g_adv + info, info, MIStats(jsd, mi_cat, mi_bern, mi_cont)
