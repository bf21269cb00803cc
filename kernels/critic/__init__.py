"""critic_bound's Triton kernels: forward.py (tiles, merge, finalize), backward.py (the
gradients of x and y, their split sums, the scalar gradients), terms.py (the per-tile
math), config.py (tunables, value indices, launch layouts)."""
