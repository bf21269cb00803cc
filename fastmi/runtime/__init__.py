"""What every op of fastmi shares, and nothing op-specific: no module here imports an op.

    registry.py       an op's backends and the ``"auto"`` choice
    gpu_rule.py       the GPU half of ``"auto"``: backends ranked by measured speed
    native_build.py   ninja builds of csrc/, cached on disk under a key of everything they depend on
    build_lock.py     the build lock: bounded waits, released when its holder dies
    cpu_extension.py  the one native CPU library (every op's C++ kernels) and its gradient pool
    cuda_toolkit.py   which CUDA toolkit builds native GPU code, for which GPUs
    library.py        torch.library registration (custom ops, triton ops)
    triton_launch.py  Triton launches: interpreter switch, cached runners, device guard
"""
