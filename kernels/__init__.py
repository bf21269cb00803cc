"""Triton kernels of fastmi (imported as ``fastmi.kernels``)."""
