"""critic_bound's Triton backend on CPU tensors, under the Triton interpreter
(TRITON_INTERPRET=1), through the public API, against the float64 reference.

triton reads TRITON_INTERPRET when a kernel is decorated (when fastmi.kernels is
imported), so, as tests/test_triton_interpreter.py does for the InfoGAN kernels, the
normal suite runs this module again in a child pytest with the variable set and fails
with the child's report when an interpreted test fails.

The interpreted tests: the contract vectors (float64); the CASES of tests/critic_helpers.py
(every estimator, offset, bias, normalize, symmetric, smile's clip) in each dtype with the
default tiles; a hypothesis matrix (estimator, symmetric, N > B with an offset, normalize,
bias, scale, B and N that are not multiples of the blocks, float32 and bfloat16, a random
upstream grad) with SMALL_TILES, which turn a few dozen rows into several row blocks,
column groups, strided row blocks per program and a split backward; the row problems of
group= (a local block at an offset, the transposed column problem); gradcheck in float64;
bit-identical reruns; large scores (CLIP's scale 100, SigLIP's bias -10) staying finite;
inputs never written; torch.compile(fullgraph=True) and opcheck of the ops. Every output
and workspace starts as NaN (triton_launch.set_poison_outputs), so an element that a
program forgets to write fails a comparison. tests/test_critic_triton_aot.py compiles
every kernel specialization these tests use for sm_90.

Tolerances are fastmi/critic/testing.py's (check_backend: the GPU checks use the same),
with ROUNDED_G_TOLERANCES for the gradients of x and y of 16-bit inputs: the backward
rounds G to the inputs' dtype once for its tensor-core product (kernels/critic/backward.py).
"""

from __future__ import annotations


import pytest
import torch

import fastmi
from critic_helpers import CASES, ESTIMATORS, case_id, split_case

from interpreted import INTERPRETED, check_cpu_tensors_need_the_interpreter, run_interpreted

# kernels/critic/config.py values that make a few dozen rows a multi-program problem:
# 16-row blocks on 2 warps (on 4, ptxas spilled a few bytes in some of these tiny
# kernels, at under 100 registers), at most 6 programs (column groups, strided row blocks, split backward),
# 2 row groups for the column LSEs, 16-row merges, 2 partial rows per finalize step
SMALL_TILES = dict(
    FORWARD_TILES={kind: (16, 16, 16, 2, 1) for kind in ("16bit", "fp32", "fp64")},
    BACKWARD_TILES={kind: (16, 16, 16, 16, 2, 1) for kind in ("16bit", "fp32", "fp64")},
    TARGET_PROGRAMS=6, SYM_ROW_GROUPS=2, BLOCK_REDUCE=16, BLOCK_PARTIALS=2, SPLIT_ROWS=16, SPLIT_COLS=16,
)
MATRIX_DIM = 37                                 # three 16-wide chunks of d, the last one masked
MATRIX_DTYPES = (torch.float32, torch.bfloat16)
MATRIX_EXAMPLES = 50
CASE_DIM = 8                                    # also the d of the smaller tests below
CASE_DTYPES = (torch.float32, torch.float64)
HALF_CASES = [CASES[i] for i in (1, 3, 7, 10)]  # un-normalized infonce, nwj, smile, siglip (normalize
HALF_DTYPES = (torch.bfloat16, torch.float16)   # hands the kernels float32 rows)
GRADCHECK_SHAPE = (5, 7, 3, 2)                  # rows, cols, d, offset


def small_tiles(monkeypatch) -> None:
    """SMALL_TILES in kernels/critic/config.py, and no plan built with the defaults."""
    from fastmi.critic import triton as triton_backend
    from fastmi.kernels.critic import config

    for name, value in SMALL_TILES.items():
        monkeypatch.setattr(config, name, value)
    monkeypatch.setattr(triton_backend, "_plans", {})


def group_row_problems(rows: int) -> list:
    """(name, RowProblem, n_cols) of the calls group= makes on rank 1 of 2: local rows
    against all columns at offset B, and (symmetric) the transposed column problem."""
    from fastmi.critic.problem import make_problem

    out = []
    for estimator in ESTIMATORS:
        problem = make_problem(estimator, estimator == "infonce", False, 2.0, 0)
        out.append((f"{estimator}-rows", problem.group_rows._replace(offset=rows), 2 * rows))
        if problem.group_columns is not None:
            out.append((f"{estimator}-columns", problem.group_columns._replace(offset=rows), 2 * rows))
    return out


if not INTERPRETED:

    def test_interpreted_suite():
        """Runs this module's interpreted tests in a child process with TRITON_INTERPRET=1."""
        run_interpreted(__file__, "interpreted critic Triton tests")

    def test_cpu_tensors_need_the_interpreter():
        """Without TRITON_INTERPRET the backend serves CUDA tensors only, and says why not CPU."""
        pytest.importorskip("triton")
        from fastmi.critic import triton as triton_backend
        from fastmi.critic.backends import REGISTRY

        check_cpu_tensors_need_the_interpreter(triton_backend, REGISTRY, lambda: fastmi.critic_bound(torch.ones(2, 3), torch.ones(2, 3), backend="triton"))

else:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import test_critic_vectors as vectors
    from critic_helpers import assert_close, evaluate, random_pair
    from fastmi.critic.testing import check_backend
    from fastmi.critic import bounds, tiled
    from fastmi.critic import triton as triton_backend
    from fastmi.runtime import triton_launch

    # numpy warns about lanes that are masked out (-inf - -inf, log 0 of a padded row),
    # which a GPU computes silently and no result reads
    pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

    @pytest.fixture(autouse=True)
    def poison_outputs():
        """Outputs and workspaces start as NaN, so an element a kernel forgets to write fails the test."""
        triton_launch.set_poison_outputs(True)
        yield
        triton_launch.set_poison_outputs(False)

    def check_against_oracle(x, y, upstream=1.0, **options):
        check_backend("triton", x, y, upstream=upstream, **options)

    def test_backend_serves_cpu_tensors_when_interpreted():
        from fastmi.critic.backends import REGISTRY

        assert "cpu" in triton_backend.devices()
        assert triton_backend.is_available() is None
        assert REGISTRY.unavailable_reason("triton", "cpu") is None

    @pytest.mark.parametrize("index", range(len(vectors.VECTORS)),
                             ids=[f"{i}-{c['estimator']}" for i, c in enumerate(vectors.VECTORS)])
    def test_contract_vector(index):
        vectors.test_contract_vector("triton", index)

    @pytest.mark.parametrize("case,dtype", [(c, d) for c in CASES for d in CASE_DTYPES]
                             + [(c, d) for c in HALF_CASES for d in HALF_DTYPES],
                             ids=lambda v: str(v) if isinstance(v, torch.dtype) else case_id(v))
    def test_case_matches_oracle(case, dtype):
        rows, cols, options = split_case(case)
        x, y = random_pair(rows, cols, CASE_DIM, offset=options.get("offset", 0), dtype=dtype, seed=rows * cols)
        check_against_oracle(x, y, upstream=0.7, **options)

    @st.composite
    def matrix_case(draw):
        estimator = draw(st.sampled_from(ESTIMATORS))
        symmetric = estimator == "infonce" and draw(st.booleans())
        rows = draw(st.integers(1, 50))
        cols = rows if symmetric else rows + draw(st.integers(1 if rows == 1 else 0, 24))
        options = dict(estimator=estimator, symmetric=symmetric,
                       offset=0 if symmetric else draw(st.integers(0, cols - rows)),
                       normalize=draw(st.booleans()), scale=draw(st.sampled_from([0.5, 2.0, 10.0])))
        if draw(st.booleans()):
            options["bias"] = draw(st.sampled_from([-3.0, 0.5]))
        if estimator == "smile":
            options["clip"] = draw(st.sampled_from([1.0, 5.0]))
        return rows, cols, draw(st.sampled_from(MATRIX_DTYPES)), draw(st.sampled_from([1.0, -0.6])), options

    @settings(max_examples=MATRIX_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(case=matrix_case())
    def test_matrix_matches_oracle(case, monkeypatch):
        rows, cols, dtype, upstream, options = case
        small_tiles(monkeypatch)
        x, y = random_pair(rows, cols, MATRIX_DIM, offset=options["offset"], dtype=dtype, seed=rows * 31 + cols)
        check_against_oracle(x, y, upstream=upstream, **options)

    @pytest.mark.parametrize("name,problem,cols", group_row_problems(20), ids=[p[0] for p in group_row_problems(20)])
    def test_group_row_problems(name, problem, cols, monkeypatch):
        """The row problems that group= solves (local rows at offset rank * B against all
        columns; the transposed column problem) equal the tiled backend's, op by op."""
        small_tiles(monkeypatch)
        x, y = random_pair(20, cols, MATRIX_DIM, offset=problem.offset, seed=8)
        scale, bias = torch.tensor(3.0), torch.tensor(-0.5)
        upstream = torch.randn(len(bounds.PARTIALS), generator=torch.Generator().manual_seed(2))
        got = triton_backend.forward(x, y, scale, bias, *problem)
        want = tiled.forward(x, y, scale, bias, *problem)
        for what, a, e in zip(("partials", "row_lse", "col_lse"), got, want):
            assert a.shape == e.shape, what
            assert_close(a, e, what, floor=1.0)
        got_grads = triton_backend.backward(upstream, x, y, scale, bias, *got, *problem)
        want_grads = tiled.backward(upstream, x, y, scale, bias, *want, *problem)
        for what, a, e in zip(("grad_x", "grad_y", "grad_scale", "grad_bias"), got_grads, want_grads):
            assert_close(a, e, what, floor=1.0 if what in ("grad_scale", "grad_bias") else 0.0)

    @pytest.mark.parametrize("estimator", [e for e in ESTIMATORS if e != "smile"])  # smile: js's gradient by design
    def test_gradcheck_float64(estimator):
        rows, cols, dim, offset = GRADCHECK_SHAPE
        x, y = random_pair(rows, cols, dim, offset=offset, dtype=torch.float64, seed=11)
        leaves = [x.requires_grad_(), y.requires_grad_(), torch.tensor(2.5, dtype=torch.float64, requires_grad=True),
                  torch.tensor(-0.3, dtype=torch.float64, requires_grad=True)]

        def loss(x, y, scale, bias):
            return fastmi.critic_bound(x, y, estimator=estimator, scale=scale, bias=bias, offset=offset,
                                       backend="triton").loss

        assert torch.autograd.gradcheck(loss, leaves)

    def test_gradcheck_symmetric_float64():
        x, y = random_pair(6, 6, 3, dtype=torch.float64, seed=12)
        leaves = [x.requires_grad_(), y.requires_grad_(), torch.tensor(4.0, dtype=torch.float64, requires_grad=True)]
        assert torch.autograd.gradcheck(
            lambda x, y, s: fastmi.critic_bound(x, y, symmetric=True, scale=s, backend="triton").loss, leaves)

    @pytest.mark.parametrize("options", [dict(estimator="infonce", symmetric=True, scale=5.0),
                                         dict(estimator="siglip", scale=4.0, bias=-2.0, offset=5)],
                             ids=["infonce-symmetric", "siglip-offset"])
    def test_bitwise_deterministic(options, monkeypatch):
        """Two calls give identical bits, and the oracle's values, with several programs per
        sum: column groups, strided row blocks (their column LSEs merged across row
        blocks), a split backward (SMALL_TILES)."""
        small_tiles(monkeypatch)
        rows = 45
        cols = rows + options.get("offset", 0)
        x, y = random_pair(rows, cols, MATRIX_DIM, offset=options.get("offset", 0), seed=5)
        check_against_oracle(x, y, **options)
        first, second = (evaluate(x, y, backend="triton", **options) for _ in range(2))
        for name in ("loss", "mi", "accuracy"):
            assert torch.equal(getattr(first.out, name), getattr(second.out, name)), name
        for name in ("grad_x", "grad_y", "grad_scale", "grad_bias"):
            a, b = getattr(first, name), getattr(second, name)
            assert (a is None and b is None) or torch.equal(a, b), name

    def test_small_tiles_use_every_multi_program_path(monkeypatch):
        """SMALL_TILES at the determinism test's sizes: column groups and strided row
        blocks in the forward, a split and an unsplit strided backward."""
        from fastmi.kernels.critic import config

        small_tiles(monkeypatch)
        symmetric = config.forward_layout(45, 45, MATRIX_DIM, "float32", True)
        assert symmetric.col_groups > 1 and symmetric.row_blocks_per_program > 1
        assert config.backward_layout(45, 50, MATRIX_DIM, "float32").split
        strided = config.backward_layout(120, 50, MATRIX_DIM, "float32")
        assert not strided.split and strided.own_blocks_per_program > 1

    @pytest.mark.parametrize("options", [
        dict(estimator="infonce", symmetric=True, scale=100.0, normalize=True),
        dict(estimator="siglip", scale=100.0, bias=-10.0, normalize=True),
        dict(estimator="js", scale=100.0, normalize=True),
        dict(estimator="dv", scale=100.0, normalize=True),
        dict(estimator="smile", scale=100.0, normalize=True, clip=5.0),
    ], ids=lambda o: o["estimator"])
    def test_large_scores_stay_finite(options):
        """Scores up to 100 (exp overflows float32): every output and gradient finite and
        equal to the oracle's. Masked positives are -inf before any exp."""
        x, y = random_pair(12, 12, CASE_DIM, seed=4, signal=3.0)
        got = evaluate(x, y, backend="triton", **options)
        for t in (got.out.loss, got.out.mi, got.grad_x, got.grad_y, got.grad_scale):
            assert torch.isfinite(t).all()
        check_against_oracle(x, y, **options)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
    def test_inputs_are_never_written(dtype):
        x, y = random_pair(20, 25, CASE_DIM, offset=3, dtype=dtype, seed=6)
        before = x.clone(), y.clone()
        leaves = [x.requires_grad_(), y.requires_grad_()]
        fastmi.critic_bound(*leaves, estimator="siglip", scale=3.0, bias=-1.0, offset=3, backend="triton").loss.backward()
        assert torch.equal(x.detach(), before[0]) and torch.equal(y.detach(), before[1])
        for leaf in leaves:
            assert leaf.grad is not None
            assert leaf.grad.untyped_storage().data_ptr() not in {x.untyped_storage().data_ptr(),
                                                                 y.untyped_storage().data_ptr()}

    def test_compile_fullgraph():
        """torch.compile(fullgraph=True) traces the loss and its backward without a graph
        break (under the interpreter the ops are opaque custom ops) and matches eager."""
        torch._dynamo.reset()
        x, y = random_pair(10, 10, CASE_DIM, seed=7)

        def step(x, y, scale, bias):
            out = fastmi.critic_bound(x, y, estimator="siglip", scale=scale, bias=bias, backend="triton")
            return out.loss, out.mi, out.accuracy

        results = []
        for fn in (torch.compile(step, fullgraph=True, backend="aot_eager"), step):
            leaves = [x.clone().requires_grad_(), y.clone().requires_grad_(), torch.tensor(3.0, requires_grad=True),
                      torch.tensor(-1.0, requires_grad=True)]
            loss, mi, accuracy = fn(*leaves)
            loss.backward()
            results.append([loss, mi, accuracy] + [t.grad for t in leaves])
        for got, want in zip(*results):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)

    @pytest.mark.parametrize("estimator,symmetric", [("infonce", True), ("smile", False)])
    def test_opcheck(estimator, symmetric):
        from fastmi.critic.problem import make_problem

        x, y = random_pair(6, 6 if symmetric else 8, CASE_DIM, offset=0 if symmetric else 2, seed=4)
        problem = tuple(make_problem(estimator, symmetric, False, 2.0, 0 if symmetric else 2).rows)
        tensors = [x.requires_grad_(), y.requires_grad_(), torch.tensor(1.5, requires_grad=True),
                   torch.tensor(-0.2, requires_grad=True)]
        torch.library.opcheck(triton_backend.ops.forward, (*tensors, *problem))
        with torch.no_grad():
            saved = triton_backend.ops.forward(*tensors, *problem)
        grad = torch.randn(len(bounds.PARTIALS), generator=torch.Generator().manual_seed(5))
        torch.library.opcheck(triton_backend.ops.backward, (grad, *[t.detach() for t in tensors], *saved, *problem))
