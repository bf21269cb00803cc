"""The fused CPU backend of critic_bound (csrc/critic/cpu through fastmi/critic/cpu.py).

Against the float64 reference (every estimator and option, float64 / float32 / bfloat16 /
float16 inputs, sizes that are not multiples of the tiles, tiles of 1 score, odd tiles),
against tiled.py (each partial and its gradient at the op level), the contract vectors,
gradcheck; torch.compile and opcheck; bit-identical results for 1, 2 and 3 threads; every
gradient element written (the session's gradient buffers start as NaN: tests/conftest.py);
the schedule's visitor order; memory that never grows with B x N (a child process's RSS
high-water mark); the op's own errors.
"""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fastmi
from critic_helpers import (CASES, ESTIMATORS, assert_close, assert_results_close, case_id, evaluate, oracle,
                            random_pair, score_magnitude, split_case)
import test_critic_vectors as vectors
from fastmi.critic import bounds, cpu, tiled
from fastmi.critic.problem import RowProblem, make_problem
from fastmi.runtime import cpu_extension

F64 = torch.float64
DIFFERENTIABLE = [name for name in bounds.PARTIALS if name != "correct"]
VECTORS = json.loads((Path(__file__).parent / "data" / "critic_vectors.json").read_text())["cases"]


@pytest.fixture
def tile():
    """``tile(n)`` sets tiles of n x n scores for this test (0: the default plan)."""
    yield cpu.set_tile
    cpu.set_tile(0)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_auto_picks_the_cpu_backend():
    assert "cpu" in fastmi.critic.available_backends("cpu")
    assert fastmi.critic.backends.backend_name("auto", "cpu") == "cpu"


# ---- the contract and the float64 oracle ----------------------------------------------------

@pytest.mark.parametrize("tiles", [0, 1], ids=["default-tiles", "1x1-tiles"])
@pytest.mark.parametrize("index", range(len(VECTORS)), ids=[f"{i}-{c['estimator']}" for i, c in enumerate(VECTORS)])
def test_contract_vector(index, tiles, tile):
    """tests/data/critic_vectors.json (written apart from the project); 1 x 1 tiles make
    every row and column merge across tiles run."""
    tile(tiles)
    vectors.test_contract_vector("cpu", index)


@pytest.mark.parametrize("dtype", [torch.float32, F64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("tiles", [0, 5], ids=["default-tiles", "5x5-tiles"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_estimator_matches_oracle(case, tiles, dtype, tile):
    """Loss, mi, accuracy, jsd_bound and every gradient against the float64 reference on
    the same (rounded) inputs: 16-bit inputs meet float32's tolerance in the outputs and
    come back in their dtype, rounded once."""
    tile(tiles)
    rows, cols, options = split_case(case)
    pair = random_pair(rows, cols, 16, offset=options.get("offset", 0), dtype=dtype, seed=rows * cols)
    got = evaluate(*pair, backend="cpu", upstream=0.7, **options)
    want_dtype = F64 if dtype == F64 else torch.float32
    assert got.out.loss.dtype == want_dtype and got.grad_x.dtype == dtype and got.grad_y.dtype == dtype
    assert_results_close(got, oracle(*pair, upstream=0.7, **options), dtype, terms=score_magnitude(options))


LARGE = [
    dict(estimator="infonce", symmetric=True, scale=10.0, normalize=True),
    dict(estimator="infonce", offset=37, scale=5.0, bias=0.2),
    dict(estimator="dv", offset=11, scale=2.0),
    dict(estimator="nwj", bias=-0.5),
    dict(estimator="js", scale=3.0, offset=5),
    dict(estimator="smile", clip=1.5, scale=4.0),
    dict(estimator="siglip", scale=10.0, bias=-10.0, normalize=True, offset=97),
]


@pytest.mark.parametrize("tiles", [0, 16, 13], ids=["default-tiles", "16x16-tiles", "13x13-tiles"])
@pytest.mark.parametrize("options", LARGE, ids=case_id)
def test_sizes_that_are_not_multiples_of_the_tiles(options, tiles, tile):
    """B = 203 rows against N = 300 columns (203 when symmetric), d = 24: ragged last row
    and column tiles, a partial last vector of lanes, positives crossing tile borders."""
    tile(tiles)
    rows, cols = 203, 203 if options.get("symmetric") else 300
    x, y = random_pair(rows, cols, 24, offset=options.get("offset", 0), seed=3)
    got = evaluate(x, y, backend="cpu", upstream=0.7, **options)
    assert_results_close(got, oracle(x, y, upstream=0.7, **options), torch.float32, terms=score_magnitude(options))


# ---- the op against tiled.py, the executable specification ---------------------------------

def _leaves(rows, cols, dim, offset, with_bias, seed):
    pair = random_pair(rows, cols, dim, offset=offset, dtype=F64, seed=seed)
    scale = torch.tensor(2.5, dtype=F64)
    bias = torch.tensor(-0.3, dtype=F64) if with_bias else None
    return pair.x, pair.y, scale, bias


@pytest.mark.parametrize("tiles", [0, 3], ids=["default-tiles", "3x3-tiles"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("partial", DIFFERENTIABLE + ["all"])
def test_partial_and_its_gradient_match_tiled(partial, with_bias, tiles, tile):
    """Each partial (and all at once) with a random upstream grad: forward's partials,
    row_lse and col_lse, and the backward's four gradients equal tiled.py's (B = 9
    against N = 10 at offset 1, float64). neg_lse_clip's gradient (no estimator
    differentiates it) is checked only here."""
    tile(tiles)
    names = DIFFERENTIABLE if partial == "all" else [partial]
    problem = RowProblem(1, bounds.mask_of(names + ["correct"]), bounds.mask_of(names), clip=0.7)
    x, y, scale, bias = _leaves(9, 10, 5, 1, with_bias, seed=len(names) + 3 * with_bias)
    upstream = torch.randn(len(bounds.PARTIALS), generator=torch.Generator().manual_seed(5), dtype=F64)
    got = cpu.forward(x, y, scale, bias, *problem)
    want = tiled.forward(x, y, scale, bias, *problem)
    for name, a, b in zip(("partials", "row_lse", "col_lse"), got, want):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert_close(a, b, name)
    grads = cpu.backward(upstream, x, y, scale, bias, *got, *problem)
    expected = tiled.backward(upstream, x, y, scale, bias, *want, *problem)
    for name, a, b in zip(("grad_x", "grad_y", "grad_scale", "grad_bias"), grads, expected):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert_close(a, b, name)


@pytest.mark.parametrize("estimator", bounds.ESTIMATORS)
def test_float32_partials_match_tiled(estimator, tile):
    """float32 at the op level against tiled.py in float32, on 64 x 96 with 16 x 16 tiles."""
    tile(16)
    symmetric = estimator == "infonce"
    offset = 0 if symmetric else 17
    problem = make_problem(estimator, symmetric, False, 1.0, offset).rows
    x, y = random_pair(64, 64 if symmetric else 96, 32, offset=offset, seed=9)
    scale, bias = torch.tensor(3.0), torch.tensor(0.25)
    got, want = cpu.forward(x, y, scale, bias, *problem), tiled.forward(x, y, scale, bias, *problem)
    for name, a, b in zip(("partials", "row_lse", "col_lse"), got, want):
        assert_close(a, b.double(), name, floor=1.0)
    upstream = torch.linspace(-1.0, 1.0, len(bounds.PARTIALS))
    grads = cpu.backward(upstream, x, y, scale, bias, *got, *problem)
    for name, a, b in zip(("grad_x", "grad_y", "grad_scale", "grad_bias"), grads,
                          tiled.backward(upstream, x, y, scale, bias, *want, *problem)):
        assert_close(a, b.double(), name, floor=1.0 if name in ("grad_scale", "grad_bias") else 0.0)


# ---- gradients -------------------------------------------------------------------------------

@pytest.mark.parametrize("estimator", [e for e in bounds.ESTIMATORS if e != "smile"])  # smile: js's gradient
def test_gradcheck(estimator, tile):
    """Finite differences agree with the fused backward (float64, 2 x 2 tiles)."""
    tile(2)
    x, y, scale, bias = (t.requires_grad_() for t in _leaves(5, 7, 3, 2, True, seed=11))

    def loss(x, y, scale, bias):
        return fastmi.critic_bound(x, y, estimator=estimator, scale=scale, bias=bias, offset=2, backend="cpu").loss

    torch.autograd.gradcheck(loss, (x, y, scale, bias))


def test_gradcheck_symmetric(tile):
    tile(2)
    x, y, scale, _ = (t.requires_grad_() if t is not None else t for t in _leaves(6, 6, 3, 0, False, seed=12))
    torch.autograd.gradcheck(lambda x, y, s: fastmi.critic_bound(x, y, symmetric=True, normalize=True, scale=s,
                                                                 backend="cpu").loss, (x, y, scale))


def test_smile_has_the_clipped_dv_value_and_the_js_gradient():
    x, y = random_pair(6, 9, 4, offset=3, dtype=F64, seed=12)
    options = dict(scale=3.0, bias=0.4, offset=3, clip=1.0)
    smile = evaluate(x, y, backend="cpu", estimator="smile", **options)
    js = evaluate(x, y, backend="cpu", estimator="js", **options)
    assert smile.out.loss.item() == pytest.approx(-smile.out.mi.item(), rel=1e-14)
    for name in ("grad_x", "grad_y", "grad_scale", "grad_bias"):
        assert torch.equal(getattr(smile, name), getattr(js, name)), name


def test_double_backward_takes_the_reference(tile):
    """create_graph=True: the backward runs the reference's composite formulas, so a
    gradient penalty gets its second derivative (gradgradcheck, eager and the op)."""
    tile(3)
    x, y, scale, bias = (t.requires_grad_() for t in _leaves(5, 7, 3, 2, True, seed=13))

    def loss(x, y, scale, bias):
        return fastmi.critic_bound(x, y, estimator="siglip", scale=scale, bias=bias, offset=2, backend="cpu").loss

    torch.autograd.gradgradcheck(loss, (x, y, scale, bias))
    problem = make_problem("infonce", False, False, 5.0, 2).rows
    torch.autograd.gradgradcheck(lambda x, y, s, b: cpu.ops.forward(x, y, s, b, *problem)[0][:2].sum(),
                                 (x, y, scale, bias))


def test_torch_func_transforms():
    x, y = random_pair(5, 5, 3, dtype=F64, seed=15)
    grad = torch.func.grad(lambda x: fastmi.critic_bound(x, y, estimator="dv", backend="auto").loss)(x)
    assert_close(grad, evaluate(x, y, estimator="dv").grad_x)
    with pytest.raises(RuntimeError, match="backend 'cpu' does not support torch.func transforms"):
        torch.func.grad(lambda x: fastmi.critic_bound(x, y, backend="cpu").loss)(x)


# ---- numerics at the edges -------------------------------------------------------------------

@pytest.mark.parametrize("estimator", [e for e in ESTIMATORS if e != "nwj"])  # nwj's exp(S - 1) overflows there
def test_large_scores_stay_finite(estimator, tile):
    """CLIP's largest scale on unit rows: positives near 100, negatives far below. Each
    negatives' log-sum-exp is taken relative to the negatives' own max (not the
    positive's), so it neither underflows nor turns inf * 0 into NaN."""
    tile(8)
    x, y = random_pair(32, 32, 8, seed=4, signal=4.0)
    options = dict(estimator=estimator, scale=100.0, normalize=True, symmetric=estimator == "infonce")
    got = evaluate(x, y, backend="cpu", **options)
    for t in (got.out.loss, got.grad_x, got.grad_y, got.grad_scale):
        assert torch.isfinite(t).all()
    assert_results_close(got, oracle(x, y, **options), torch.float32, terms=100.0)


def test_argmax_ties_take_the_first_column(tile):
    """accuracy counts a row whose positive ties with an earlier column as wrong and one
    that ties with a later column as right, as torch.argmax; 1 x 1 tiles visit the
    columns in a rotated order, so the tie-break must compare indices."""
    x = torch.eye(4, dtype=F64)
    y = torch.cat([x, x])                        # row i of x scores 1 at columns i and i + 4
    for offset, expected in ((0, 1.0), (4, 0.0)):
        for tiles in (0, 1):
            tile(tiles)
            out = fastmi.critic_bound(x[:4], y, estimator="dv", offset=offset, backend="cpu")
            assert out.accuracy.item() == expected, (offset, tiles)


def test_nan_inputs_give_nan():
    x, y = random_pair(8, 8, 4, seed=5)
    x[3, 1] = math.nan
    for estimator in ESTIMATORS:
        out = fastmi.critic_bound(x, y, estimator=estimator, backend="cpu")
        assert math.isnan(out.loss.item()), estimator
    # a NaN score is the argmax of its row, as torch.argmax has it: row 3 is not correct
    assert fastmi.critic_bound(x, y, estimator="dv", backend="cpu").accuracy.item() == pytest.approx(
        fastmi.critic_bound(x, y, estimator="dv", backend="reference").accuracy.item())


def test_non_contiguous_inputs():
    big_x, big_y = random_pair(12, 12, 16, seed=6)
    x, y = big_x[:, ::2], big_y.T.contiguous().T[:, 1::2]
    assert not x.is_contiguous() and not y.is_contiguous()
    options = dict(estimator="dv", scale=2.0)
    assert_results_close(evaluate(x, y, backend="cpu", **options), oracle(x, y, **options), torch.float32)
    problem = make_problem("dv", False, False, 5.0, 0).rows
    got = cpu.forward(x, y, torch.tensor(2.0), None, *problem)[0]
    assert torch.equal(got, cpu.forward(x.contiguous(), y.contiguous(), torch.tensor(2.0), None, *problem)[0])


@pytest.mark.parametrize("estimator", ["infonce", "siglip"])
def test_inside_autocast(estimator):
    torch.manual_seed(0)
    towers = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)
    inputs = random_pair(10, 10, 16, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x, y = (tower(t) for tower, t in zip(towers, inputs))
        out = fastmi.critic_bound(x, y, estimator=estimator, scale=5.0, bias=-2.0, normalize=True, backend="cpu",
                                  symmetric=estimator == "infonce")
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert all(torch.isfinite(t.weight.grad).all() for t in towers)
    expected = fastmi.critic_bound(x.detach().double(), y.detach().double(), estimator=estimator, scale=5.0,
                                   bias=-2.0, normalize=True, symmetric=estimator == "infonce", backend="reference")
    assert_close(out.loss, expected.loss, "loss")


# ---- determinism and the schedule --------------------------------------------------------------

@pytest.mark.parametrize("tiles", [0, 16], ids=["default-tiles", "16x16-tiles"])
@pytest.mark.parametrize("options", LARGE, ids=case_id)
def test_bit_identical_for_any_thread_count(options, tiles, tile, threads):
    """1, 2 and 3 threads give the same bits: loss, mi, accuracy and every gradient."""
    tile(tiles)
    rows, cols = 203, 203 if options.get("symmetric") else 300
    x, y = random_pair(rows, cols, 24, offset=options.get("offset", 0), seed=8)
    runs = []
    for n in (1, 2, 3):
        threads(n)
        runs.append(evaluate(x, y, backend="cpu", upstream=0.7, **options))
    for run in runs[1:]:
        for name in ("loss", "mi", "accuracy"):
            assert torch.equal(getattr(run.out, name), getattr(runs[0].out, name)), name
        for name in ("grad_x", "grad_y", "grad_scale", "grad_bias"):
            a, b = getattr(run, name), getattr(runs[0], name)
            assert (a is None and b is None) or torch.equal(a, b), name


def test_bit_identical_at_the_default_tiles(threads):
    """1,024 x 1,024, d = 64: four row tiles of 256, the benchmark's shape class."""
    x, y = random_pair(1024, 1024, 64, seed=10)
    runs = []
    for n in (1, 2, 3):
        threads(n)
        runs.append(evaluate(x, y, backend="cpu", symmetric=True, scale=14.0, normalize=True))
    assert cpu.tiles(1024, 1024) == (256, 256, 4, 4)
    for run in runs[1:]:
        for a, b in zip((run.out.loss, run.grad_x, run.grad_y, run.grad_scale),
                        (runs[0].out.loss, runs[0].grad_x, runs[0].grad_y, runs[0].grad_scale)):
            assert torch.equal(a, b)


def test_previous_visitor_against_brute_force():
    """Row tile r visits column tile (r + t) mod C at step t; the kernel's previous
    visitor of each (r, t) is the visitor of that column at the latest earlier step."""
    ext = cpu_extension.extension()
    for R in range(1, 8):
        for C in range(R, R + 6):
            visits = {}
            for t in range(C):
                for r in range(R):
                    visits.setdefault((r + t) % C, []).append((t, r))
            for order in visits.values():
                order.sort()
                for k, (t, r) in enumerate(order):
                    expected = [-1, -1] if k == 0 else [order[k - 1][1], order[k - 1][0]]
                    assert ext.critic_previous_visitor(R, C, r, t) == expected, (R, C, r, t)


@pytest.mark.parametrize("rows,cols", [(1, 2), (6, 6), (31, 40), (32, 32), (1000, 1000), (4096, 4096),
                                       (65536, 65536), (64, 65536), (300, 100_000)])
def test_default_tiles(rows, cols):
    """At most 256 x 256 scores; at least 4 row tiles from B = 32 on; C >= R (the schedule
    needs it); wider column tiles when N >> B."""
    tile_rows, tile_cols, R, C = cpu.tiles(rows, cols)
    assert tile_rows <= 256 and tile_cols <= 256 and R == -(-rows // tile_rows) and C == -(-cols // tile_cols)
    assert C >= R
    if rows >= 32:
        assert R >= 4
    if cols >= 64 * rows:
        assert tile_cols > tile_rows


def test_every_gradient_element_is_written(tile):
    """The session's gradient buffers start as NaN (tests/conftest.py): a dx or dy row
    that no tile wrote stays NaN. Ragged tiles, offset, N > B."""
    assert cpu_extension.extension is not None
    cpu_extension.set_poison_outputs(True)
    for tiles in (0, 4, 7):
        tile(tiles)
        x, y = random_pair(29, 45, 6, offset=9, seed=tiles)
        got = evaluate(x, y, backend="cpu", estimator="siglip", scale=2.0, bias=-1.0, offset=9)
        assert torch.isfinite(got.grad_x).all() and torch.isfinite(got.grad_y).all(), tiles


# ---- torch.compile and opcheck ---------------------------------------------------------------

@pytest.mark.parametrize("options", [dict(estimator="infonce", symmetric=True, normalize=True, scale=5.0),
                                     dict(estimator="siglip", bias=-1.0, scale=3.0, offset=2)], ids=case_id)
def test_compile_fullgraph(options):
    torch._dynamo.reset()
    options = dict(options)
    scale, bias = options.pop("scale"), options.pop("bias", None)
    offset = options.get("offset", 0)
    x, y = random_pair(6, 6 + offset, 8, offset=offset, seed=1)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

    def step(x, y, scale, bias):
        out = fastmi.critic_bound(x, y, scale=scale, bias=bias, backend="cpu", **options)
        return out.loss, out.mi, out.accuracy

    results = []
    for fn in (torch.compile(step, fullgraph=True, backend=capture), step):
        leaves = [x.clone().requires_grad_(), y.clone().requires_grad_(), torch.tensor(scale, requires_grad=True)]
        leaves.append(None if bias is None else torch.tensor(bias, requires_grad=True))
        loss, mi, accuracy = fn(*leaves)
        loss.backward()
        results.append([loss, mi, accuracy] + [None if t is None else t.grad for t in leaves])
    for name, got, want in zip(("loss", "mi", "accuracy", "grad_x", "grad_y", "grad_scale", "grad_bias"), *results):
        assert (got is None) == (want is None), name
        if want is not None:
            assert torch.equal(got, want), name      # the same kernels, compiled or eager
    assert len(graphs) == 1
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert any("fastmi.critic_cpu_forward" in t for t in targets), targets


def test_compile_inductor():
    torch._dynamo.reset()
    x, y = random_pair(8, 8, 4, seed=2)
    fn = torch.compile(lambda x, y: fastmi.critic_bound(x, y, symmetric=True, scale=3.0, backend="cpu").loss,
                       fullgraph=True)
    leaves = [x.clone().requires_grad_(), y.clone().requires_grad_()]
    fn(*leaves).backward()
    expected = evaluate(x, y, backend="cpu", symmetric=True, scale=3.0)
    assert torch.equal(leaves[0].grad, expected.grad_x) and torch.equal(leaves[1].grad, expected.grad_y)


# opcheck of the cpu ops: tests/test_critic_compile.py, with the tiled ones.


# ---- memory ----------------------------------------------------------------------------------

MEMORY_PROBE = textwrap.dedent("""
    import resource, sys, torch, fastmi
    from fastmi.runtime import cpu_extension
    torch.set_num_threads(2)
    cpu_extension.extension()                       # the library is loaded before the baseline
    rows, dim, estimator = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, dim, generator=g).requires_grad_()
    y = torch.randn(rows, dim, generator=g).requires_grad_()
    warm = fastmi.critic_bound(x[:64], y[:64], estimator=estimator, symmetric=estimator == "infonce", backend="cpu")
    warm.loss.backward()                            # first-call allocations out of the baseline
    x.grad = y.grad = None
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = fastmi.critic_bound(x, y, estimator=estimator, symmetric=estimator == "infonce", scale=0.5,
                              backend="cpu")
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(x.grad).all()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
""")


@pytest.mark.parametrize("estimator", ["infonce", "siglip"])
def test_memory_never_grows_with_b_times_n(estimator):
    """B = N = 16,384 (the scores alone would be 1 GiB of float32) in a child process: its
    RSS high-water mark grows by less than 48 MiB over the forward and backward (inputs
    and gradients are 2 MiB, the O(B + N) state under 1 MiB, scratch 2 tiles per thread)."""
    rows, dim = 16384, 16
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(rows), str(dim), estimator],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    grew = int(result.stdout.strip().splitlines()[-1])
    scores = rows * rows * 4
    assert grew < 48 << 20, f"RSS grew by {grew / 2**20:.1f} MiB (the scores would be {scores / 2**30:.1f} GiB)"


# ---- errors ----------------------------------------------------------------------------------

def test_op_errors():
    x, y = random_pair(4, 6, 3, seed=7)
    scale = torch.tensor(1.0)
    args = make_problem("dv", False, False, 5.0, 0).rows
    with pytest.raises(ValueError, match=r"x and y must have shapes \[B, d\] and \[N, d\] with d >= 1, got "
                                         r"\(4, 3\) and \(6, 2\)"):
        cpu.forward(x, y[:, :2], scale, None, *args)
    with pytest.raises(ValueError, match=r"expected 1 <= B <= N, got x \(4, 3\) and y \(3, 3\)"):
        cpu.forward(x, y[:3], scale, None, *args)
    with pytest.raises(ValueError, match=r"offset must lie in \[0, N - B\] = \[0, 2\], got 3"):
        cpu.forward(x, y, scale, None, *args._replace(offset=3))
    with pytest.raises(ValueError, match="x and y must have one dtype, float32, bfloat16, float16 or float64, got "
                                         "Float and Double"):
        cpu.forward(x, y.double(), scale, None, *args)
    with pytest.raises(ValueError, match="differentiate a subset of it, got compute=1, differentiate=2"):
        cpu.forward(x, y, scale, None, *RowProblem(0, 1, 2, 5.0))
    with pytest.raises(ValueError, match="clip must be finite and > 0, got -1"):
        cpu.forward(x, y, scale, None, *RowProblem(0, 1 << 6, 0, -1.0))
    with pytest.raises(ValueError, match=r"scale must be a one-element CPU float tensor, got Float of shape \(2,\)"):
        cpu.forward(x, y, torch.ones(2), None, *args)
    with pytest.raises(ValueError, match="bias must be a one-element CPU float tensor, got Long"):
        cpu.forward(x, y, scale, torch.tensor(1), *args)
    infonce = make_problem("infonce", False, False, 5.0, 0).rows
    partials, row_lse, col_lse = cpu.forward(x, y, scale, None, *infonce)
    with pytest.raises(ValueError, match=r"row_lse must be the forward's, a CPU Float vector of shape \(4,\), got "
                                         r"Float of shape \(0,\)"):
        cpu.backward(torch.ones(8), x, y, scale, None, partials, col_lse, col_lse, *infonce)
    with pytest.raises(ValueError, match=r"grad_partials must be a CPU float vector of shape \(8,\)"):
        cpu.backward(torch.ones(7), x, y, scale, None, partials, row_lse, col_lse, *infonce)


def test_critic_bound_errors_name_the_argument():
    """critic_bound validates before any backend (fastmi/critic/inputs.py): the messages
    are the same with backend='cpu'."""
    x, y = random_pair(4, 6, 3, seed=7)
    with pytest.raises(ValueError, match=r"critic_bound: y must have shape \[N, 3\] with N >= B = 4"):
        fastmi.critic_bound(x, y[:3], backend="cpu")
    with pytest.raises(ValueError, match="critic_bound: scale must be finite and > 0"):
        fastmi.critic_bound(x, y, scale=-1.0, backend="cpu")
    with pytest.raises(ValueError, match=r"normalize=True needs rows of nonzero norm, but x\[2\] has norm 0"):
        fastmi.critic_bound(x.index_fill(0, torch.tensor([2]), 0.0), y, normalize=True, backend="cpu")
