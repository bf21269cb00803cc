"""Runnable examples: ``python -m fastmi.examples.<name>``.

    mi_staircase   Poole et al. (2019), Fig. 2: every critic_bound estimator on correlated
                   Gaussians whose true MI steps 2, 4, 6, 8, 10 nats
"""
