"""The Triton backend (kernels/, shipped as ``fastmi.kernels``).

One launch computes the forward (every term, the partial sums and the final losses and
stats, kernels/infogan_forward.py) and one launch the backward (every gradient,
recomputed from the inputs, kernels/infogan_backward.py). Neither syncs with the host
nor allocates by data, so both are CUDA-graph capturable; kernels/config.py holds the
tunables and the layout choice.

Devices: CUDA tensors; also CPU tensors when ``TRITON_INTERPRET=1`` is set before
triton is imported (the Triton interpreter runs the same kernels in numpy, for tests).

Registration: :func:`fastmi.backends.fused_op.define_fused_ops` makes the ops
``fastmi::triton_forward`` / ``fastmi::triton_backward``. On GPUs they are
``torch.library.triton_op`` ops, so torch.compile sees through them to the kernels
(launched with ``wrap_triton``); under the interpreter they are opaque custom ops,
because ``wrap_triton`` cannot trace an interpreted kernel. Eager calls go through the
autograd.Function of define_fused_ops and launch the kernels directly; after a
specialization's first launch they go through its cached CompiledKernel runner, which
skips triton's per-launch argument binding (see ``_run``; FASTMI_TRITON_FAST_LAUNCH=0
turns that off).

Invalid codes: a categorical index outside [0, K) or a bernoulli value other than 0/1
makes the losses (and that element's gradient) NaN; the kernels never read memory at
the code's value. The CPU backends raise instead, which would need a host sync here.

The multi-program forward hands out tickets from a per-device int32 counter that the
last program puts back to zero; it is created (zeroed) on the device's first such call,
so run one eager call before capturing a CUDA graph, and do not overlap two such
launches on different streams of one device. Under torch.compile the counter is a
``torch.zeros`` in the graph instead (a graph cannot hold a module-level tensor that a
kernel mutates). A problem small enough for one program (e.g. B <= 256 at W = 14) uses
no counter at all.
"""

import os
import struct
from typing import Optional

import torch
import triton  # an ImportError here tells the registry that triton is missing
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor
from torch._subclasses.functional_tensor import FunctionalTensor

from ..kernels import config
from ..kernels.infogan_backward import infogan_backward_kernel
from ..kernels.infogan_forward import infogan_forward_kernel
from .fused_op import define_fused_ops


def interpreting() -> bool:
    """Whether triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def DEVICES() -> tuple:  # noqa: N802  (the registry's name for it)
    return ("cuda", "cpu") if interpreting() else ("cuda",)


def is_available():
    if interpreting():
        return None
    if not torch.cuda.is_available():
        return ("no CUDA device is visible (set TRITON_INTERPRET=1 before importing triton to run the "
                "Triton kernels on CPU tensors in the interpreter)")
    try:
        triton.runtime.driver.active.get_current_target()
    except Exception as exc:  # a broken driver or an unsupported GPU
        return f"triton has no usable GPU driver ({type(exc).__name__}: {exc})"
    return None


# ---- launch preparation, cached per shape and problem ------------------------------------

def _split(x: float) -> tuple:
    """(fp32(x), fp32(x - fp32(x))): a Python float as two fp32 kernel arguments."""
    hi = struct.unpack("f", struct.pack("f", x))[0]
    return hi, struct.unpack("f", struct.pack("f", x - hi))[0]


class _Launch:
    """Everything about the two launches that depends only on the shapes and the problem."""

    __slots__ = ("layout", "grid", "backward_grid", "single", "trip_counts", "forward_scalars", "backward_scalars",
                 "forward_constexprs", "backward_constexprs", "runners")

    def __init__(self, n_rows, n_real, cat_sizes, n_bernoulli, n_continuous, learned_std, fixed_logvar,
                 prior_entropy, lambda_cat, lambda_cont, minimax, real_label, sum_reduction, fp64, has_real,
                 has_fake):
        layout = config.choose_layout(n_rows, n_real, cat_sizes, n_bernoulli, n_continuous, fp64)
        self.layout = layout
        self.grid = (layout.programs,)
        self.backward_grid = (layout.backward_programs,)
        self.single = layout.programs == 1
        self.trip_counts = (config.cdiv(layout.n_real_blocks, layout.programs),
                            config.cdiv(layout.n_tiles, layout.programs),
                            config.cdiv(layout.programs, config.BLOCK_PARTIALS))
        fl, pe, lc, lo, rl = (_split(float(v)) for v in (fixed_logvar, prior_entropy, lambda_cat, lambda_cont,
                                                          real_label))
        self.forward_scalars = (*fl, *pe, *lc, *lo, *rl)
        self.backward_scalars = (*fl, *lc, *lo, *rl)
        width = sum(cat_sizes) + n_bernoulli + n_continuous * (2 if learned_std else 1)
        shared = dict(
            W=width, CAT_SIZES=cat_sizes, CAT_OFFSETS=config.cat_offsets(cat_sizes), CAT_BLOCKS=layout.cat_blocks,
            N_BERN=n_bernoulli, BERN_OFFSET=sum(cat_sizes), BLOCK_BERN=layout.block_bern,
            N_CONT=n_continuous, MU_OFFSET=sum(cat_sizes) + n_bernoulli, BLOCK_CONT=layout.block_cont,
            LEARNED_STD=learned_std, HAS_REAL=has_real, HAS_FAKE=has_fake, MINIMAX=minimax,
            SUM_REDUCTION=sum_reduction, FP64=fp64, ROWS=layout.rows, BLOCK_REAL=layout.block_real,
        )
        self.forward_constexprs = dict(shared, N_SUMS=layout.n_sums, N_STATS=layout.n_stats,
                                       SINGLE_PROGRAM=self.single, BLOCK_PARTIALS=config.BLOCK_PARTIALS)
        self.backward_constexprs = {  # one per combination of present upstream grads
            flags: dict(shared, HAS_GRAD_DISC=flags[0], HAS_GRAD_GEN=flags[1], HAS_GRAD_INFO=flags[2])
            for flags in ((a, b, c) for a in (False, True) for b in (False, True) for c in (False, True))
        }
        self.runners = {}  # (kernel, device, arg dtypes, flags) -> a compiled kernel's launcher


_launches: dict = {}
_MAX_LAUNCHES = 4096


def _launch(n_rows: int, n_real: int, q, fake, problem_args) -> _Launch:
    key = (n_rows, n_real, q.dtype, fake is not None, *problem_args[1:])
    key = key + (tuple(problem_args[0]),)
    launch = _launches.get(key)
    if launch is None:
        if len(_launches) >= _MAX_LAUNCHES:  # e.g. a sweep over many batch sizes
            _launches.clear()
        (cat_sizes, n_bernoulli, n_continuous, learned_std, fixed_logvar, prior_entropy, lambda_cat, lambda_cont,
         minimax, real_label, sum_reduction) = problem_args
        launch = _launches[key] = _Launch(
            n_rows, n_real, tuple(cat_sizes), n_bernoulli, n_continuous, learned_std, fixed_logvar,
            prior_entropy, lambda_cat, lambda_cont, minimax, real_label, sum_reduction, q.dtype == torch.float64,
            n_real > 0, fake is not None)
    return launch


def _tracing(t: Tensor) -> bool:
    """True while torch.compile traces the op (fake or functional tensors)."""
    return isinstance(t, (FakeTensor, FunctionalTensor))


# Launch through a cached CompiledKernel runner instead of JITFunction.run, whose argument
# binding and specialization cost tens of microseconds per launch on the host. A runner
# is reused only for launches that JITFunction.run would specialize identically: same
# kernel, device, layout and problem (hence the same ints and constexprs), same tensor
# dtypes, and every pointer 16-byte aligned (triton's one pointer specialization), as it
# was when the runner's kernel was compiled. Anything else takes the ordinary path.
FAST_LAUNCH = os.environ.get("FASTMI_TRITON_FAST_LAUNCH", "1") == "1"


def _run(kernel, launch: _Launch, grid: tuple, args: tuple, constexprs: dict, traced: bool) -> None:
    num_warps = launch.layout.num_warps
    if traced:  # torch.compile: inductor sees the kernel through wrap_triton
        torch.library.wrap_triton(kernel)[grid](*args, **constexprs, num_warps=num_warps)
        return
    if not FAST_LAUNCH or interpreting():
        kernel[grid](*args, **constexprs, num_warps=num_warps)
        return
    tensors = [a for a in args if isinstance(a, Tensor)]
    aligned = all(t.data_ptr() % 16 == 0 for t in tensors)
    key = (kernel, tensors[0].get_device(), id(constexprs), *(t.dtype for t in tensors))
    runner = launch.runners.get(key) if aligned else None
    if runner is not None:
        runner(*args, *constexprs.values())  # constexprs are the kernels' last parameters, in order
        return
    compiled = kernel[grid](*args, **constexprs, num_warps=num_warps)
    if aligned and compiled is not None:
        launch.runners[key] = compiled[grid]


_counters: dict = {}


def _counter(device: torch.device, traced: bool) -> Tensor:
    """The ticket counter of the multi-program forward: zero between launches."""
    if traced:
        return torch.zeros(1, dtype=torch.int32, device=device)
    counter = _counters.get(device)
    if counter is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("fastmi triton backend: the first multi-program forward on a device cannot run "
                               "inside CUDA graph capture (it creates the zeroed ticket counter); run one call "
                               "eagerly before capturing")
        counter = _counters[device] = torch.zeros(1, dtype=torch.int32, device=device)
    return counter


class _DeviceGuard:
    """Makes q's CUDA device current for the launch (triton launches on the current device)."""

    __slots__ = ("index", "previous")

    def __init__(self, q: Tensor):
        self.index = q.get_device()
        self.previous = -1

    def __enter__(self):
        if self.index >= 0:
            current = torch.cuda.current_device()
            if current != self.index:
                self.previous = current
                torch.cuda.set_device(self.index)

    def __exit__(self, *exc):
        if self.previous >= 0:
            torch.cuda.set_device(self.previous)


_poison = False


def set_poison_outputs(on: bool) -> None:
    """Tests: fill every output with NaN before the launch, so an element a kernel forgets
    to write fails a comparison instead of passing by luck (costs a fill per output)."""
    global _poison
    _poison = bool(on)


def _fresh(t: Tensor) -> Tensor:
    return t.fill_(float("nan")) if _poison else t


# ---- the two op implementations (their annotations are the op schemas) ---------------------

def forward(real: Optional[Tensor], fake: Optional[Tensor], q: Tensor, categorical: Optional[Tensor],
            bernoulli: Optional[Tensor], continuous: Optional[Tensor], cat_sizes: list[int], n_bernoulli: int,
            n_continuous: int, learned_std: bool, fixed_logvar: float, prior_entropy: float, lambda_cat: float,
            lambda_cont: float, minimax: bool, real_label: float,
            sum_reduction: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(discriminator, generator, info, stats)`` of one batch, in one launch."""
    # int(): under torch.compile with dynamic shapes this specializes on the batch sizes,
    # which the layout (block sizes, grid) depends on
    n_rows, n_real = int(q.shape[0]), 0 if real is None else int(real.shape[0])
    launch = _launch(n_rows, n_real, q, fake, (cat_sizes, n_bernoulli, n_continuous, learned_std, fixed_logvar,
                                     prior_entropy, lambda_cat, lambda_cont, minimax, real_label, sum_reduction))
    layout = launch.layout
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    disc = _fresh(torch.empty((), dtype=acc, device=q.device))
    gen = _fresh(torch.empty((), dtype=acc, device=q.device))
    info = _fresh(torch.empty((), dtype=acc, device=q.device))
    stats = _fresh(torch.empty((config.STATS_FIXED + len(cat_sizes),), dtype=acc, device=q.device))
    traced = _tracing(q)
    if launch.single:
        partials = counter = stats  # never touched by a single program
    else:
        partials = torch.empty((layout.programs, layout.n_sums), dtype=acc, device=q.device)
        counter = _counter(q.device, traced)
    args = (q if real is None else real, q if fake is None else fake, q,
            q if categorical is None else categorical, q if bernoulli is None else bernoulli,
            q if continuous is None else continuous,
            disc, gen, info, stats, partials, counter,
            n_real, n_rows, *launch.trip_counts, *launch.forward_scalars)
    with _DeviceGuard(q):
        _run(infogan_forward_kernel, launch, launch.grid, args, launch.forward_constexprs, traced)
    return disc, gen, info, stats


def backward(grad_discriminator: Optional[Tensor], grad_generator: Optional[Tensor], grad_info: Optional[Tensor],
             real: Optional[Tensor], fake: Optional[Tensor], q: Tensor, categorical: Optional[Tensor],
             bernoulli: Optional[Tensor], continuous: Optional[Tensor], cat_sizes: list[int], n_bernoulli: int,
             n_continuous: int, learned_std: bool, fixed_logvar: float, prior_entropy: float, lambda_cat: float,
             lambda_cont: float, minimax: bool, real_label: float,
             sum_reduction: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(grad_real, grad_fake, grad_q)`` in the inputs' dtypes, in one launch; the grad
    of an absent input is an empty [0] tensor, an absent upstream grad counts as zero."""
    # int(): under torch.compile with dynamic shapes this specializes on the batch sizes,
    # which the layout (block sizes, grid) depends on
    n_rows, n_real = int(q.shape[0]), 0 if real is None else int(real.shape[0])
    launch = _launch(n_rows, n_real, q, fake, (cat_sizes, n_bernoulli, n_continuous, learned_std, fixed_logvar,
                                     prior_entropy, lambda_cat, lambda_cont, minimax, real_label, sum_reduction))
    grad_real = _fresh(torch.empty_like(real)) if real is not None else q.new_empty((0,))
    grad_fake = _fresh(torch.empty_like(fake)) if fake is not None else q.new_empty((0,))
    grad_q = _fresh(torch.empty_like(q))
    traced = _tracing(q)
    flags = (grad_discriminator is not None, grad_generator is not None, grad_info is not None)
    args = (grad_discriminator if flags[0] else q, grad_generator if flags[1] else q, grad_info if flags[2] else q,
            q if real is None else real, q if fake is None else fake, q,
            q if categorical is None else categorical, q if bernoulli is None else bernoulli,
            q if continuous is None else continuous,
            grad_q if real is None else grad_real, grad_q if fake is None else grad_fake, grad_q,
            n_real, n_rows, *launch.backward_scalars)
    with _DeviceGuard(q):
        _run(infogan_backward_kernel, launch, launch.backward_grid, args, launch.backward_constexprs[flags], traced)
    return grad_real, grad_fake, grad_q


# FASTMI_TRITON_OPAQUE_OPS=1 registers plain custom ops on GPUs too: torch.compile then
# calls the launcher as a black box (no graph break either) instead of tracing into it.
OPAQUE_OPS = os.environ.get("FASTMI_TRITON_OPAQUE_OPS", "0") == "1"


def _register(name, fn, *, mutates_args, schema):
    if interpreting() or OPAQUE_OPS:  # wrap_triton cannot trace an interpreted kernel: keep the op opaque
        return torch.library.custom_op(name, fn, mutates_args=mutates_args, schema=schema)
    # triton_op infers the schema from fn's annotations, which spell out `schema`
    return torch.library.triton_op(name, fn, mutates_args=mutates_args)


ops = define_fused_ops("triton", forward, backward, register=_register)


def loss(inputs, problem):
    return ops.loss(inputs, problem)
