"""``critic_bound``'s public API: :func:`critic_bound` and its module form :class:`CriticBound`."""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from . import bounds
from ..runtime.registry import transforms_active
from .backends import REGISTRY, backend_name, partials_fn
from .inputs import check_group, prepare_inputs
from .outputs import CriticBoundOutput
from .problem import make_problem

Scalar = Union[float, Tensor]


def critic_bound(
    x: Tensor,
    y: Tensor,
    *,
    estimator: str = "infonce",
    scale: Scalar = 1.0,
    bias: Optional[Scalar] = None,
    offset: int = 0,
    symmetric: bool = False,
    normalize: bool = False,
    clip: float = 5.0,
    group=None,
    backend: str = "auto",
) -> CriticBoundOutput:
    """A variational bound on I(X; Y) from a batch of paired embeddings, without storing
    the score matrix (shared/design/CRITIC_BOUNDS.md, Poole et al. 2019).

    The critic of pair (i, j) is ``S[i, j] = scale * <x_i, y_j> + bias``; row i of x is
    paired with row ``i + offset`` of y (its positive), every other pair is a negative.
    With B rows, N columns, P the positives, Neg the B N - B negatives:

        infonce  loss = mean_i [LSE_j S[i, :] - S[i, i+o]]   (symmetric: with the column CE, / 2)
                 mi = log N - loss
        nwj      loss = -mi,  mi = 1 + mean_P (S - 1) - mean_Neg exp(S - 1)
        dv       loss = -mi,  mi = mean_P S - log mean_Neg exp(S)
        js       loss = mean_P softplus(-S) + mean_Neg softplus(S),  mi = NWJ at S + 1,
                 jsd_bound = log 2 - loss / 2
        smile    mi = mean_P S - log mean_Neg exp(clamp(S, -clip, clip)); loss has the
                 value -mi and the gradient of js
        siglip   loss = (sum_P softplus(-S) + sum_Neg softplus(S)) / B,  mi = the dv value

    Args:
        x: [B, d] embeddings (float32, bfloat16, float16 or float64).
        y: [N, d] embeddings, N >= B and N >= 2; with ``group``, [B, d] like x.
        estimator: ``"infonce"``, ``"nwj"``, ``"dv"``, ``"js"``, ``"smile"`` or ``"siglip"``.
        scale: s > 0, a float or a 0-d tensor that may require grad (CLIP's
            ``logit_scale.exp()``); used as given, its gradient is dL/ds.
        bias: None, a float or a 0-d tensor (SigLIP's bias).
        offset: row i's positive is y[i + offset], 0 <= offset <= N - B.
        symmetric: infonce only, N = B: CLIP's loss, the mean of the x -> y and y -> x
            cross-entropies.
        normalize: divide the rows of x and y by their L2 norms first (with the gradient);
            a row of norm 0 raises on CPU and makes the loss NaN on a GPU (no host sync).
        clip: smile's tau.
        group: a torch.distributed process group: x and y are this rank's pairs; the
            columns are every rank's y (OpenCLIP's local_loss + gather_with_grad). The
            loss is this rank's, and the mean of the ranks' losses is the loss of the
            concatenated batch (fastmi/critic/distributed.py).
        backend: ``"auto"``, ``"reference"``, ``"tiled"``, ``"cpu"`` or ``"triton"``. Inside
            torch.func transforms (vmap, grad, ...) ``"auto"`` is the reference and a
            fused backend raises.

    Returns:
        :class:`CriticBoundOutput` ``(loss, mi, accuracy, jsd_bound)``: 0-d tensors in
        float32 (float64 for float64 inputs); ``loss`` carries autograd to x, y, scale and
        bias (gradients in their dtypes), the rest are detached. Accumulation is float32
        for 16-bit inputs, also inside ``torch.autocast``.
    """
    # dynamo traces through lru_cache (and warns); the cache only pays off in eager
    build = make_problem.__wrapped__ if torch.compiler.is_compiling() else make_problem
    problem = build(estimator, symmetric, normalize, clip, offset)
    if group is not None:
        check_group(group)
    inputs = prepare_inputs(x, y, scale, bias, problem, group)
    name = backend_name(backend, inputs.x.device.type)
    if not torch.compiler.is_compiling() and transforms_active():
        name = REGISTRY.under_transforms(backend, name)
    partials = partials_fn(name)
    if group is None:
        found = partials(inputs.x, inputs.y, inputs.scale, inputs.bias, problem.rows)
        counts = bounds.Counts.single(inputs.x.shape[0], inputs.y.shape[0])
    else:
        from .distributed import group_partials

        found, counts = group_partials(partials, inputs, problem, group)
    return bounds.finish(problem.estimator, problem.symmetric, problem.differentiate, found, counts)


# (initial scale, initial bias, cap on the scale) per estimator: CLIP's logit scale starts
# at 1 / 0.07 and is clamped to 100; SigLIP's starts at 10 with a bias of -10 (Zhai et
# al. 2023, with no cap); the others start at the plain dot product.
MODULE_DEFAULTS = {
    "infonce": (1 / 0.07, None, 100.0),
    "siglip": (10.0, -10.0, math.inf),
}
PLAIN_DEFAULTS = (1.0, None, math.inf)


class CriticBound(torch.nn.Module):
    """:func:`critic_bound` with a learnable scale (and bias), initialised as CLIP and SigLIP do.

    The module holds ``log_scale`` (a parameter, or a buffer with ``learn_scale=False``)
    and uses ``scale = min(exp(log_scale), max_scale)``: CLIP's parameterisation, where the
    clamp stops the scale (and its gradient) at the cap. ``bias`` is a parameter when
    ``init_bias`` is given (siglip's default is -10), else None.

    Defaults per estimator (``init_scale``, ``init_bias``, ``max_scale`` = None take them):

        infonce   scale 1 / 0.07, no bias, max_scale 100    (CLIP)
        siglip    scale 10, bias -10, no cap                (SigLIP)
        others    scale 1, no bias, no cap

    ``CriticBound("siglip")(x, y)`` is ``critic_bound(x, y, estimator="siglip",
    scale=..., bias=..., **options)``; ``forward`` also takes ``offset``.
    """

    def __init__(self, estimator: str = "infonce", *, init_scale: Optional[float] = None,
                 init_bias: Optional[float] = None, max_scale: Optional[float] = None, learn_scale: bool = True,
                 symmetric: bool = False, normalize: bool = False, clip: float = 5.0, group=None,
                 backend: str = "auto"):
        super().__init__()
        make_problem(estimator, symmetric, normalize, clip, 0)  # validate now
        default_scale, default_bias, default_cap = MODULE_DEFAULTS.get(estimator, PLAIN_DEFAULTS)
        init_scale = default_scale if init_scale is None else float(init_scale)
        if not (math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"CriticBound: init_scale must be finite and > 0, got {init_scale!r}")
        self.max_scale = default_cap if max_scale is None else float(max_scale)
        if not self.max_scale > 0:
            raise ValueError(f"CriticBound: max_scale must be > 0, got {self.max_scale!r}")
        log_scale = torch.tensor(math.log(init_scale))
        if learn_scale:
            self.log_scale = torch.nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        init_bias = default_bias if init_bias is None else float(init_bias)
        self.bias = None if init_bias is None else torch.nn.Parameter(torch.tensor(init_bias))
        self.estimator = estimator
        self.group = group
        self.options = dict(symmetric=symmetric, normalize=normalize, clip=clip, backend=backend)

    @property
    def scale(self) -> Tensor:
        scale = self.log_scale.exp()
        return scale.clamp(max=self.max_scale) if math.isfinite(self.max_scale) else scale

    def forward(self, x: Tensor, y: Tensor, offset: int = 0) -> CriticBoundOutput:
        return critic_bound(x, y, estimator=self.estimator, scale=self.scale, bias=self.bias, offset=offset,
                            group=self.group, **self.options)

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"estimator={self.estimator!r}, max_scale={self.max_scale}, {options}"
