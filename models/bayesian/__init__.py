"""ZhuSuan's Bayesian models on real data: BNNs, PMF, a topic model, a sparse GP, and more
(one model per module).

Each runs as `python -m models.bayesian.<name>`; see `models/zoo.py` for the shared
command line and outputs. Models on split data sets also take `--split K`.
"""
