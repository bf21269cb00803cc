"""The Triton backend on CPU tensors, under the Triton interpreter (TRITON_INTERPRET=1).

triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when fastmi.kernels is
imported, so the interpreted tests cannot share a process with the rest of the suite:
run without the variable (the normal suite), this module holds one test that runs the
module again in a child pytest with TRITON_INTERPRET=1 (tests/interpreted.py) and fails with the child's
report when any interpreted test fails. The parent process never sets the variable.

The matrix (CASES) is the one of tests/test_correctness.py thinned for the
interpreter's speed, keeping every boundary of the layout in kernels/infogan/config.py: batch
1, 63/64/65, the 256-row tile edge (255/256/257; 128/129 for float64), a second
real-logit block (Br = 1025),
Br != Bf, a K = 65536 code (chunked online log-sum-exp, one row per tile), a K = 4097
code (one chunk past a block), 5000 bernoulli and 4500 continuous codes (chunked
too), each dtype, int32 codes, fixed std, absent real or fake
logits, minimax, sum reduction, label smoothing and non-default lambdas.
tests/test_triton_aot.py compiles, for sm_90, every kernel specialization these cases use.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

import fastmi

from interpreted import INTERPRETED, check_cpu_tensors_need_the_interpreter, run_interpreted

MNIST = fastmi.LatentSpec(categorical=(10,), continuous=2)
RICH = fastmi.LatentSpec(categorical=(3, 7), bernoulli=2, continuous=3, continuous_prior="normal", std=0.7)
WIDE = fastmi.LatentSpec(categorical=(1000,), continuous=4)
ODD_K = fastmi.LatentSpec(categorical=(4097,), bernoulli=1, continuous=0)
HUGE_K = fastmi.LatentSpec(categorical=(65536, 5), bernoulli=1, continuous=1)
NO_CAT = fastmi.LatentSpec(categorical=(), bernoulli=3, continuous=2, std=0.5)
WIDE_BLOCKS = fastmi.LatentSpec(categorical=(7,), bernoulli=5000, continuous=4500)  # chunked bern and mu/logvar


class Case(NamedTuple):
    name: str
    spec: fastmi.LatentSpec
    batch: int
    dtype: torch.dtype = torch.float32
    options: dict = {}
    kwargs: dict = {}   # random_case keywords: real_batch, with_real, with_fake, index_dtype, ...


CASES = [
    Case("mnist-b1", MNIST, 1),
    Case("mnist-b63", MNIST, 63),
    Case("mnist-b64", MNIST, 64),
    Case("mnist-b65", MNIST, 65),
    Case("mnist-b255", MNIST, 255),
    Case("mnist-b256", MNIST, 256),
    Case("mnist-b257-br1025", MNIST, 257, kwargs=dict(real_batch=1025)),
    Case("mnist-b5-br3000", MNIST, 5, kwargs=dict(real_batch=3000)),
    Case("mnist-bf16-b65", MNIST, 65, torch.bfloat16),
    Case("mnist-fp16-b64", MNIST, 64, torch.float16),
    Case("mnist-fp64-b65", MNIST, 65, torch.float64),
    Case("mnist-fp64-b129", MNIST, 129, torch.float64),   # float64 tiles hold 128 rows: two programs
    Case("mnist-int32-no-real", MNIST, 64, kwargs=dict(with_real=False, index_dtype=torch.int32)),
    Case("mnist-no-fake", MNIST, 63, kwargs=dict(with_fake=False)),
    Case("rich-b64", RICH, 64),
    Case("rich-b300-options", RICH, 300, options=dict(generator_loss="minimax", reduction="sum", real_label=0.9,
                                                      lambda_cat=0.3, lambda_cont=1.7),
         kwargs=dict(real_batch=200, index_dtype=torch.int32)),
    Case("rich-fp64-smoothing", RICH, 33, torch.float64, options=dict(real_label=0.85, lambda_cat=0.7)),
    Case("rich-fp16-minimax", RICH, 65, torch.float16, options=dict(generator_loss="minimax")),
    Case("rich-bf16-sum", RICH, 2, torch.bfloat16, options=dict(reduction="sum")),
    Case("nocat-b65", NO_CAT, 65, options=dict(real_label=0.9)),
    Case("wide-b3", WIDE, 3),
    Case("wide-bf16-b5", WIDE, 5, torch.bfloat16),
    Case("oddk-b2", ODD_K, 2, kwargs=dict(real_batch=7)),
    Case("oddk-fp64-b2", ODD_K, 2, torch.float64),       # 2048-column float64 chunks: three of them
    Case("hugek-b2", HUGE_K, 2),
    Case("wide-blocks-b3", WIDE_BLOCKS, 3, options=dict(lambda_cat=0.5)),
    Case("hugek-bf16-b1", HUGE_K, 1, torch.bfloat16, kwargs=dict(index_dtype=torch.int32)),
]


if not INTERPRETED:

    def test_interpreted_suite():
        """Runs this module's interpreted tests in a child process with TRITON_INTERPRET=1."""
        run_interpreted(__file__, "interpreted Triton tests")

    def test_cpu_tensors_need_the_interpreter():
        """Without TRITON_INTERPRET the backend serves CUDA tensors only, and says why not CPU."""
        pytest.importorskip("triton")
        from fastmi.infogan import triton as triton_backend
        from fastmi.infogan.backends import REGISTRY

        check_cpu_tensors_need_the_interpreter(triton_backend, REGISTRY, lambda: fastmi.infogan_loss(None, torch.zeros(2), torch.zeros(2, 14), MNIST.sample(2), MNIST, backend="triton"))

else:
    import math

    import test_contract_vectors as contract
    import test_numerics as numerics
    import test_trust as trust
    from helpers import check_backend, evaluate, random_case, random_upstream

    from fastmi.infogan import triton as triton_backend
    from fastmi.kernels.infogan import config
    from fastmi.runtime import triton_launch

    @pytest.fixture(autouse=True)
    def poison_outputs():
        """Outputs start as NaN, so an element a kernel forgets to write fails the test."""
        triton_launch.set_poison_outputs(True)
        yield
        triton_launch.set_poison_outputs(False)

    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_matches_float64_reference(case):
        check_backend("triton", case.spec, case.batch, case.dtype, seed=case.batch, options=case.options,
                      confident=True, **case.kwargs)

    # The suite's backend-generic checks, run on this backend too.
    @pytest.mark.parametrize("index", range(len(contract.VECTORS)))
    def test_contract_vectors(index):
        contract.check_contract_vector("triton", index)

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
    def test_extreme_logits(dtype):
        numerics.test_extreme_logits_give_finite_losses_and_grads("triton", dtype)

    @pytest.mark.parametrize("where", ["real", "fake", "cat", "bern", "mu", "logvar", "code"])
    def test_nan_inputs_come_out_nan(where):
        numerics.test_nan_inputs_come_out_nan("triton", where)

    @pytest.mark.parametrize("check", [trust.r1_weight_grad, trust.gradgradcheck, trust.unused_inputs_get_no_gradient,
                                       trust.no_gradient_to_the_codes, trust.infinite_inputs_at_their_limits,
                                       trust.real_gradient_keeps_its_tail], ids=lambda f: f.__name__)
    def test_trust(check):
        """tests/test_trust.py's checks: gradient penalties, unused inputs, codes, infinities."""
        if check is trust.r1_weight_grad:
            torch.testing.assert_close(check("triton"), check("reference"), rtol=1e-12, atol=0)
        else:
            check("triton")

    @pytest.mark.parametrize("spec,options", [
        (numerics.SPEC, {}),
        (numerics.FIXED, dict(generator_loss="minimax", reduction="sum", real_label=0.8)),
    ], ids=["learned", "fixed-minimax-sum-smoothed"])
    def test_gradcheck_float64(spec, options):
        case = random_case(spec, 5, real_batch=4, dtype=torch.float64, seed=2)
        inputs = tuple(t.detach().clone().requires_grad_() for t in case[:3])

        def fn(real, fake, q):
            out = fastmi.infogan_loss(real, fake, q, case.codes, spec, backend="triton", **options)
            return out.discriminator, out.generator, out.info

        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)

    def test_backend_serves_cpu_tensors_when_interpreted():
        from fastmi.infogan.backends import REGISTRY

        assert "cpu" in triton_backend.devices()
        assert triton_backend.is_available() is None
        assert REGISTRY.unavailable_reason("triton", "cpu") is None

    @pytest.fixture
    def small_grid(monkeypatch):
        """At most 3 forward programs and 2 partial rows per step: a few hundred rows then
        take several tiles per program, a tile past the end, and a multi-step final sum."""
        monkeypatch.setattr(config, "MAX_PROGRAMS", 3)
        monkeypatch.setattr(config, "BLOCK_PARTIALS", 2)
        monkeypatch.setattr(triton_backend, "_plans", {})
        layout = config.choose_layout(1500, 2500, MNIST.categorical, 0, 2, False)
        assert (layout.programs, config.cdiv(layout.n_tiles, 3), config.cdiv(layout.n_real_blocks, 3)) == (3, 2, 1)
        yield

    def test_grid_stride_and_partial_blocks(small_grid):
        check_backend("triton", MNIST, 1500, torch.float32, seed=3, confident=True, real_batch=2500)

    @pytest.mark.parametrize("batch", [64, 1500])
    def test_bitwise_deterministic(batch):
        """Two runs give identical bits: single program (64) and four programs (1500)."""
        case = random_case(RICH, batch, seed=5, confident=True, real_batch=batch + 7)
        upstream = random_upstream(5)
        first, second = (evaluate(case, RICH, "triton", upstream) for _ in range(2))
        for name in first.outputs:
            assert torch.equal(first.outputs[name].nan_to_num(7.0), second.outputs[name].nan_to_num(7.0)), name
        for name in first.grads:
            assert torch.equal(first.grads[name], second.grads[name]), name

    def test_multi_program_forward_keeps_its_state_to_itself(monkeypatch):
        """A forward too big for one program makes two launches, the partial sums going
        through a float64 workspace that the call allocates: no tensor outlives the call
        or is shared with another (a shared ticket counter once let concurrent launches
        take each other's tickets)."""
        case = random_case(MNIST, 1500, seed=1)
        assert config.choose_layout(1500, 1500, MNIST.categorical, 0, 2, False).programs > 1
        launches = []
        original = triton_backend.launch_kernel

        def record(kernel, grid, args, constexprs, **kwargs):
            launches.append((kernel, [a for a in args if isinstance(a, torch.Tensor)]))
            return original(kernel, grid, args, constexprs, **kwargs)

        monkeypatch.setattr(triton_backend, "launch_kernel", record)
        workspaces = []
        for _ in range(2):
            launches.clear()
            fastmi.infogan_loss(case.real, case.fake, case.q, case.codes, MNIST, backend="triton")
            assert [k.fn.__name__ for k, _ in launches] == ["infogan_forward_kernel", "infogan_finalize_kernel"]
            workspace = launches[1][1][0]
            assert workspace.dtype == torch.float64 and workspace is launches[0][1][-1]
            workspaces.append(workspace)
        assert workspaces[0] is not workspaces[1]
        assert not any(hasattr(triton_backend, name) for name in ("_counters", "_counter"))

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
    def test_inputs_are_never_written(dtype):
        case = random_case(RICH, 70, dtype=dtype, seed=2, confident=True)
        leaves = [t.detach().clone().requires_grad_(True) for t in case[:3]]
        codes = case.codes
        before = [t.detach().clone() for t in leaves] + [t.clone() for t in codes[:3]]
        out = fastmi.infogan_loss(*leaves, codes, RICH, backend="triton")
        torch.autograd.backward([out.discriminator, out.generator, out.info],
                                [torch.tensor(1.0), torch.tensor(-2.0), torch.tensor(0.5)])
        after = [t.detach() for t in leaves] + list(codes[:3])
        for b, a in zip(before, after):
            assert torch.equal(a, b)
        storages = {t.untyped_storage().data_ptr() for t in after}
        for leaf in leaves:
            assert leaf.grad is not None and leaf.grad.untyped_storage().data_ptr() not in storages

    @pytest.mark.parametrize("which", ["generator", "discriminator", "info"])
    def test_one_upstream_grad(which):
        """Backpropagating one loss leaves the other two upstream grads absent (None):
        they count as zero."""
        case = random_case(RICH, 40, seed=4, confident=True, real_batch=30)

        def grads(backend, c):
            leaves = [t.detach().clone().requires_grad_(True) for t in c[:3]]
            out = fastmi.infogan_loss(*leaves, c.codes, RICH, backend=backend, lambda_cat=0.6)
            getattr(out, which).backward()
            return [leaf.grad for leaf in leaves]

        codes64 = case.codes._replace(bernoulli=case.codes.bernoulli.double(),
                                      continuous=case.codes.continuous.double())
        want = grads("reference", type(case)(*(t.double() for t in case[:3]), codes64))
        for got, ref in zip(grads("triton", case), want):
            if ref is None:  # the loss does not use this input: no gradient, as the reference
                assert got is None
                continue
            torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-7)

    def test_invalid_codes_give_nan_without_reading_out_of_bounds():
        spec = fastmi.LatentSpec(categorical=(5, 3), bernoulli=1, continuous=1)
        case = random_case(spec, 6, seed=9)
        categorical = case.codes.categorical.clone()
        categorical[1, 0] = 5       # == K: one past the code's logits
        categorical[4, 1] = -1
        bernoulli = case.codes.bernoulli.clone()
        bernoulli[2, 0] = 0.5
        for codes, nan_stats in ((case.codes._replace(categorical=categorical), ("mi_categorical",)),
                                 (case.codes._replace(bernoulli=bernoulli), ("mi_bernoulli",))):
            q = case.q.clone().requires_grad_(True)
            out = fastmi.infogan_loss(case.real, case.fake, q, codes, spec, backend="triton")
            for loss in (out.discriminator, out.generator, out.info):
                assert math.isnan(loss.item())
            assert math.isfinite(out.stats.jsd_bound.item()) and math.isfinite(out.stats.mi_continuous.item())
            for name in nan_stats:
                assert torch.isnan(getattr(out.stats, name)).any()
            out.info.backward()
            bad = torch.isnan(q.grad)
            if codes.categorical is categorical:
                assert bad[1, :5].all() and bad[4, 5:8].all()
                assert bad.sum() == 5 + 3
            else:
                assert bad[2, 8] and bad.sum() == 1

    def test_compile_fullgraph():
        """torch.compile(fullgraph=True) traces the loss and its backward without a graph
        break (under the interpreter the ops are opaque custom ops) and matches eager."""
        case = random_case(RICH, 50, seed=6, confident=True)

        def step(real, fake, q):
            out = fastmi.infogan_loss(real, fake, q, case.codes, RICH, backend="triton", lambda_cont=0.5)
            return out.discriminator + 0.5 * out.generator, out.stats.mi_categorical

        compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
        results = []
        for fn in (step, compiled):
            leaves = [t.detach().clone().requires_grad_(True) for t in case[:3]]
            loss, mi_cat = fn(*leaves)
            loss.backward()
            results.append((loss.detach(), mi_cat, *(leaf.grad for leaf in leaves)))
        for eager, comp in zip(*results):
            torch.testing.assert_close(comp, eager, rtol=1e-6, atol=1e-7)
