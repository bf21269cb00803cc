"""The InfoGAN loss's Triton kernels: terms.py (per-row math), forward.py, backward.py,
config.py (tunables, sum / stat indices, launch layout)."""
