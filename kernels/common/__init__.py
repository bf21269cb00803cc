"""Triton numerics shared by every op's kernels (numerics.py)."""
